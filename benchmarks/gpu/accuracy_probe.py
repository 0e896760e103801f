"""Who is right where cnnext's CUDA results and torch's CUDA results differ: each against a
float64 / CPU reference. Prints numbers; never fails."""
import torch
import torch.nn.functional as F

import cnnext
import cnnext.functional as CF


def rel(a, ref):
    return ((a.double().cpu() - ref.double().cpu()).abs().max() / ref.double().abs().max()).item()


def conv_grads():
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    x = torch.randn(3, 32, 19, 23, device="cuda")
    w = torch.randn(48, 32, 3, 3, device="cuda") / (32 * 9) ** 0.5
    b = torch.randn(48, device="cuda")
    g = torch.randn(3, 48, 19, 23, device="cuda")
    res = {}
    for name, fn, dt in (("cnnext", CF.conv2d, torch.float32), ("cudnn", F.conv2d, torch.float32),
                         ("f64", F.conv2d, torch.float64)):
        leaves = [t.to(dt).detach().requires_grad_() for t in (x, w, b)]
        out = fn(*leaves, padding=1)
        res[name] = [out] + list(torch.autograd.grad(out, leaves, g.to(dt)))
    for i, what in enumerate(("out", "grad_input", "grad_weight", "grad_bias")):
        r = res["f64"][i]
        print(f"conv 3x32x19x23->48 k3 {what}: max err / max|ref|: cnnext {rel(res['cnnext'][i], r):.2e}"
              f"  cudnn {rel(res['cudnn'][i], r):.2e}  (max abs err cnnext "
              f"{(res['cnnext'][i].double() - r).abs().max().item():.2e}, cudnn "
              f"{(res['cudnn'][i].double() - r).abs().max().item():.2e})")


def pools():
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    g = None
    for pad in (0, 1):
        xs = {"cpu": x, "cuda_nchw": x.cuda(), "cuda_nhwc": x.cuda().contiguous(memory_format=torch.channels_last)}
        for lib, f in (("torch", F.avg_pool2d), ("cnnext", CF.avg_pool2d)):
            grads = {}
            for k, t in xs.items():
                t = t.detach().requires_grad_()
                out = f(t, 3, 2, pad, True, False)
                if g is None or g.shape != out.shape:
                    g = torch.randn(out.shape, dtype=torch.float64)
                grads[k] = torch.autograd.grad(out, t, g.to(t.device))[0].cpu()
            print(f"avg_pool2d backward pad={pad} {lib}: |nchw-cpu| {(grads['cuda_nchw'] - grads['cpu']).abs().max():.2e}"
                  f"  |nhwc-cpu| {(grads['cuda_nhwc'] - grads['cpu']).abs().max():.2e}")
    y = torch.full((1, 2, 5, 5), float("-inf"))
    for lib, f in (("torch", F.max_pool2d), ("cnnext", CF.max_pool2d)):
        idx = {k: f(t, 2, 2, 1, ceil_mode=True, return_indices=True)[1].cpu().flatten().tolist()[:9]
               for k, t in (("cpu", y), ("cuda_nchw", y.cuda()),
                            ("cuda_nhwc", y.cuda().contiguous(memory_format=torch.channels_last)))}
        print(f"max_pool2d all -inf indices {lib}: {idx}")


if __name__ == "__main__":
    conv_grads()
    pools()

"""What torch itself does on CUDA where cnnext's tests assume a behaviour (output layouts,
dtypes the CUDA pooling kernels accept, the TF32 flag). Prints facts; never fails."""
import warnings

import torch
import torch.nn.functional as F


def try_(label, fn):
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            r = fn()
        print(f"{label}: {r}" + (f"  [warnings: {[str(x.message)[:120] for x in w]}]" if w else ""))
    except Exception as e:  # noqa: BLE001
        print(f"{label}: raises {type(e).__name__}: {str(e).splitlines()[0][:160]}")


def main():
    print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version(),
          "allow_tf32 default", torch.backends.cudnn.allow_tf32)
    d = "cuda"
    for dtype in (torch.float16, torch.float32, torch.float64):
        for groups, cout in ((1, 16), (8, 8), (8, 16)):
            x = torch.randn(2, 8, 9, 9, device=d, dtype=dtype).contiguous(memory_format=torch.channels_last)
            w = torch.randn(cout, 8 // groups, 3, 3, device=d, dtype=dtype)
            try_(f"conv {dtype} g{groups} cout{cout} CL input -> stride",
                 lambda: F.conv2d(x, w, padding=1, groups=groups).stride())
            w_cl = w.contiguous(memory_format=torch.channels_last)
            xc = x.contiguous()
            try_(f"conv {dtype} g{groups} cout{cout} CL weight only -> stride",
                 lambda: F.conv2d(xc, w_cl, padding=1, groups=groups).stride())
    xi = torch.randint(0, 9, (1, 2, 6, 6), device=d)
    try_("max_pool2d int64", lambda: F.max_pool2d(xi, 2).dtype)
    try_("avg_pool2d int64", lambda: F.avg_pool2d(xi, 2).dtype)
    try_("adaptive_max_pool2d int64", lambda: F.adaptive_max_pool2d(xi, 2).dtype)
    try_("adaptive_avg_pool2d int64", lambda: F.adaptive_avg_pool2d(xi, 2).dtype)
    x = torch.randn(2, 3, 8, 8, device=d).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = F.adaptive_avg_pool2d(x, 1)
    try_("adaptive_avg_pool2d CL ->1x1 out stride, grad stride",
         lambda: (out.stride(), torch.autograd.grad(out.sum(), x)[0].stride()))
    try_("conv float32 with cudnn.allow_tf32 read in C++",
         lambda: torch._C._get_cudnn_allow_tf32())


if __name__ == "__main__":
    main()

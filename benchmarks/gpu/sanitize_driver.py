"""Small driver that runs every cnnext CUDA kernel once on tiny shapes, for compute-sanitizer
(memcheck, racecheck) and as a smoke test. Run by run_h200.sh; importable without a GPU.

  python benchmarks/gpu/sanitize_driver.py          # exits 0 when every call returned
"""
import sys


def conv_calls(torch):
    """(name, thunk) for each conv2d kernel path: tensor-core vector/element loads, TF32 and
    exact float32, float64, groups, depthwise, backward with every output."""
    import cnnext

    f = cnnext.functional.conv2d
    dev = "cuda"

    def fwd_bwd(dtype, n, cin, h, w, cout, k, groups=1, stride=1, padding=1, dilation=1, cl=False):
        def run():
            x = torch.randn(n, cin, h, w, device=dev).to(dtype)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            wt = torch.randn(cout, cin // groups, k, k, device=dev).to(dtype)
            b = torch.randn(cout, device=dev).to(dtype)
            x.requires_grad_(), wt.requires_grad_(), b.requires_grad_()
            out = f(x, wt, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
            out.backward(torch.randn_like(out))
        return run

    calls = []
    for dtype in (torch.float16, torch.bfloat16):
        calls += [
            (f"conv {dtype} vec", fwd_bwd(dtype, 2, 16, 9, 11, 24, 3)),
            (f"conv {dtype} vec nhwc", fwd_bwd(dtype, 2, 16, 9, 11, 24, 3, cl=True)),
            (f"conv {dtype} elementwise", fwd_bwd(dtype, 2, 3, 9, 11, 5, 3, stride=2)),
            (f"conv {dtype} groups", fwd_bwd(dtype, 1, 16, 8, 8, 16, 3, groups=2, dilation=2, padding=2)),
            (f"conv {dtype} depthwise", fwd_bwd(dtype, 2, 8, 9, 9, 16, 3, groups=8)),
            (f"conv {dtype} tiles", fwd_bwd(dtype, 2, 40, 17, 13, 70, 3)),
        ]

    def tf32(on, run):
        def wrapped():
            saved = torch.backends.cudnn.allow_tf32
            torch.backends.cudnn.allow_tf32 = on
            try:
                run()
            finally:
                torch.backends.cudnn.allow_tf32 = saved
        return wrapped

    calls += [
        ("conv float32 tf32 vec", tf32(True, fwd_bwd(torch.float32, 2, 8, 9, 11, 24, 3))),
        ("conv float32 tf32 elementwise", tf32(True, fwd_bwd(torch.float32, 2, 3, 9, 11, 5, 3))),
        ("conv float32 exact", tf32(False, fwd_bwd(torch.float32, 2, 8, 9, 11, 24, 3))),
        ("conv float64", fwd_bwd(torch.float64, 2, 3, 7, 6, 5, 3, groups=1, stride=2)),
        ("conv float64 depthwise", fwd_bwd(torch.float64, 1, 4, 7, 6, 4, 3, groups=4)),
    ]
    return calls


def pool_calls(torch):
    ops = torch.ops.cnnext
    try:
        ops.max_pool2d
    except (AttributeError, RuntimeError):
        return []
    calls = []
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        for cl in (False, True):
            def run(dtype=dtype, cl=cl):
                x = torch.randn(2, 3, 9, 8, device="cuda").to(dtype)
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                out, idx = ops.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], True)
                ops.max_pool2d_backward(torch.ones_like(out), x, idx, [3, 3], [2, 2], [1, 1], [1, 1], True)
                out = ops.avg_pool2d(x, [3, 3], [2, 2], [1, 1], True, False, None)
                ops.avg_pool2d_backward(torch.ones_like(out), x, [3, 3], [2, 2], [1, 1], True, False, None)
                out = ops.adaptive_avg_pool2d(x, [4, 5])
                ops.adaptive_avg_pool2d_backward(torch.ones_like(out), x)
                out, idx = ops.adaptive_max_pool2d(x, [4, 5])
                ops.adaptive_max_pool2d_backward(torch.ones_like(out), x, idx)
            calls.append((f"pool {dtype} {'nhwc' if cl else 'nchw'}", run))
    return calls


def main():
    import torch

    if not torch.cuda.is_available():
        print("sanitize_driver: no CUDA GPU")
        return 2
    torch.manual_seed(0)
    calls = conv_calls(torch) + pool_calls(torch)
    for name, run in calls:
        run()
        torch.cuda.synchronize()
        print("ran", name, flush=True)
    print(f"sanitize_driver: {len(calls)} calls completed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

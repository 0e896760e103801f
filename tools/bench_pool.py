"""Pooling timings: torch vs cnnext, each side in its faster layout, and the fraction of copy
bandwidth (bytes read + written by one `dst.copy_(src)` of the input, measured in the same run).

Run under the timing lock:  flock /tmp/cnnext-timing.lock python tools/bench_pool.py [--quick]
"""
import argparse
import os
import statistics
import sys
import time

# This checkout's cnnext, not an installed one (the script's own folder is sys.path[0]).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
import torch.nn.functional as F

import cnnext.functional as CF  # noqa: E402

# name, op, input shape, kwargs
ROWS = [
    ("resnet_maxpool", "max", (8, 64, 112, 112), dict(kernel_size=3, stride=2, padding=1)),
    ("vgg_maxpool", "max", (8, 128, 56, 56), dict(kernel_size=2, stride=2)),
    ("ceil_maxpool", "max", (8, 96, 56, 56), dict(kernel_size=3, stride=2, ceil_mode=True)),
    ("s1_maxpool", "max", (8, 192, 28, 28), dict(kernel_size=3, stride=1, padding=1)),
    ("s1_avgpool", "avg", (8, 192, 28, 28), dict(kernel_size=3, stride=1, padding=1)),
    ("k2_avgpool", "avg", (8, 128, 56, 56), dict(kernel_size=2, stride=2)),
    ("global_avg_7", "gap", (8, 512, 7, 7), dict(output_size=1)),
    ("se_global_avg", "gap", (8, 96, 14, 14), dict(output_size=1)),
]


def fn_of(lib, op, kw):
    if op == "max":
        return lambda x: lib.max_pool2d(x, **kw)
    if op == "avg":
        return lambda x: lib.avg_pool2d(x, **kw)
    return lambda x: lib.adaptive_avg_pool2d(x, **kw)


def median_time(fn, reps):
    """Median of reps calls (the minimum with --min: robust on a shared machine)."""
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) if USE_MIN else statistics.median(times)


USE_MIN = False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--backward", action="store_true",
                    help="also time forward (with grad) + backward: the training path")
    ap.add_argument("--rows", default="", help="comma-separated row names")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min", action="store_true", help="minimum instead of median")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    args = ap.parse_args()
    global USE_MIN
    USE_MIN = args.min
    torch.set_num_threads(args.threads)
    reps = 7 if args.quick else 21
    want = set(args.rows.split(",")) if args.rows else None
    ratios = {}
    print(f"{'row':16s} {'dtype':9s} {'pass':4s} {'torch ms':>9s} {'layout':>6s} {'cnnext ms':>9s} "
          f"{'layout':>6s} {'t/c':>6s} {'torch bw':>8s} {'cnx bw':>7s}")
    for dtype in [getattr(torch, d) for d in args.dtypes.split(",")]:
        for name, op, shape, kw in ROWS:
            if want and name not in want:
                continue
            base = torch.randn(shape).to(dtype)
            dst = torch.empty_like(base)
            copy_t = median_time(lambda: dst.copy_(base), reps)
            copy_bw = 2 * base.numel() * base.element_size() / copy_t
            for pass_ in ("fwd", "bwd") if args.backward else ("fwd",):
                best = {}
                for lib_name, lib in (("torch", F), ("cnnext", CF)):
                    fn = fn_of(lib, op, kw)
                    for layout, fmt in (("nchw", torch.contiguous_format), ("nhwc", torch.channels_last)):
                        x = base.contiguous(memory_format=fmt)
                        if pass_ == "fwd":
                            with torch.no_grad():
                                out = fn(x)
                                t = median_time(lambda: fn(x), reps)
                            moved = x.numel() * x.element_size() + out.numel() * out.element_size()
                        else:
                            xg = x.detach().requires_grad_()
                            out = fn(xg)
                            g = torch.ones_like(out)

                            def step():
                                (gi,) = torch.autograd.grad(fn(xg), xg, g)
                            t = median_time(step, reps)
                            moved = 2 * (x.numel() + out.numel()) * x.element_size()
                        if lib_name not in best or t < best[lib_name][0]:
                            best[lib_name] = (t, layout, moved)
                tt, tl, moved = best["torch"]
                ct, cl, _ = best["cnnext"]
                ratio = tt / ct
                ratios.setdefault((dtype, pass_), []).append(ratio)
                print(f"{name:16s} {str(dtype)[6:]:9s} {pass_:4s} {tt*1e3:9.3f} {tl:>6s} {ct*1e3:9.3f} "
                      f"{cl:>6s} {ratio:6.2f} {moved/tt/copy_bw:8.0%} {moved/ct/copy_bw:7.0%}")
    for (dtype, pass_), r in ratios.items():
        geo = torch.tensor(r).log().mean().exp().item()
        print(f"geomean torch/cnnext {str(dtype)[6:]} {pass_}: {geo:.2f}x (min {min(r):.2f}x)")


if __name__ == "__main__":
    main()

"""Times cnnext's depthwise conv against torch's (oneDNN) on the depthwise layers of published
networks (EfficientNet-B0, MobileNetV2/V3, ConvNeXt-T), forward and forward+backward,
interleaved in one process, median of runs.

    flock /tmp/cnnext-timing.lock python3 tools/bench_depthwise.py [--batch 1,8] [--runs 7]
        [--threads 2] [--only substring] [--cnnext-layout nchw|cl] [--stat median|min]
        [--cpu-time]

Three columns per pass: torch NCHW, torch channels_last and cnnext (on NCHW tensors, or on
channels_last ones with --cnnext-layout cl). Ratios are torch time / cnnext time (> 1: cnnext
faster) from the same run: "x nchw" against torch NCHW, "x best" against torch's faster layout.
"""
import argparse
import ctypes
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cnnext  # noqa: E402

# name: (channels, map size, kernel, stride); padding k // 2, groups = channels.
LAYERS = [
    ("effb0_32x112_k3", 32, 112, 3, 1),
    ("effb0_96x112_k3s2", 96, 112, 3, 2),
    ("effb0_144x56_k3", 144, 56, 3, 1),
    ("effb0_144x56_k5s2", 144, 56, 5, 2),
    ("effb0_240x28_k5", 240, 28, 5, 1),
    ("effb0_240x28_k3s2", 240, 28, 3, 2),
    ("effb0_240x14_k5", 240, 14, 5, 1),
    ("effb0_480x14_k5", 480, 14, 5, 1),
    ("effb0_672x14_k5", 672, 14, 5, 1),
    ("effb0_672x14_k5s2", 672, 14, 5, 2),
    ("effb0_1152x7_k5", 1152, 7, 5, 1),
    ("effb0_1152x7_k3", 1152, 7, 3, 1),
    ("mnv3_96x28_k5s2", 96, 28, 5, 2),
    ("mnv3_576x7_k5", 576, 7, 5, 1),
    ("convnext_96x56_k7", 96, 56, 7, 1),
    ("convnext_192x28_k7", 192, 28, 7, 1),
    ("convnext_384x14_k7", 384, 14, 7, 1),
    ("convnext_768x7_k7", 768, 7, 7, 1),
    ("mnv2_144x56_k3s2", 144, 56, 3, 2),
    ("mnv2_192x28_k3", 192, 28, 3, 1),
    ("mnv2_384x14_k3", 384, 14, 3, 1),
    ("mnv2_576x14_k3", 576, 14, 3, 1),
    ("mnv2_576x14_k3s2", 576, 14, 3, 2),
    ("mnv2_960x7_k3", 960, 7, 3, 1),
]


STAT = "median"


def pin_allocator():
    # Freed pages are reused rather than re-faulted, on both sides alike.
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except OSError:
        pass


CLOCK = time.perf_counter


def timed(fn):
    t = CLOCK()
    fn()
    return CLOCK() - t


def bench_layer(n, c, hw, k, s, runs, cnnext_cl):
    torch.manual_seed(0)
    p = k // 2
    x = torch.randn(n, c, hw, hw)
    w = torch.randn(c, 1, k, k)
    b = torch.randn(c)
    go = torch.randn_like(F.conv2d(x, w, b, s, p, 1, c))
    cl = torch.channels_last
    sides = {
        "torch": (F.conv2d, x, w, go),
        "torch_cl": (F.conv2d, x.to(memory_format=cl), w.to(memory_format=cl),
                     go.to(memory_format=cl)),
        "cnnext": ((cnnext.functional.conv2d, x.to(memory_format=cl), w.to(memory_format=cl),
                    go.to(memory_format=cl)) if cnnext_cl
                   else (cnnext.functional.conv2d, x, w, go)),
    }
    times = {(side, kind): [] for side in sides for kind in ("f", "fb")}
    for r in range(runs + 1):  # the first run warms up
        for side, (f, xs, ws, gos) in sides.items():
            xr = xs.detach().requires_grad_()
            wr = ws.detach().requires_grad_()
            br = b.detach().requires_grad_()

            def fwd():
                with torch.no_grad():
                    f(xs, ws, b, s, p, 1, c)

            def fwdbwd():
                f(xr, wr, br, s, p, 1, c).backward(gos)

            tf, tb = timed(fwd), timed(fwdbwd)
            if r:
                times[(side, "f")].append(tf)
                times[(side, "fb")].append(tb)
    stat = min if STAT == "min" else statistics.median
    return {key: stat(v) * 1e3 for key, v in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--only", default="")
    ap.add_argument("--cnnext-layout", default="nchw", choices=["nchw", "cl"])
    ap.add_argument("--stat", default="median", choices=["median", "min"],
                    help="min: the fastest run, steadier when other processes share the CPU")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time process CPU time, not wall time: steadier on a shared machine "
                    "(meaningful with --threads 1; with more it counts spinning)")
    args = ap.parse_args()
    global STAT, CLOCK
    STAT = args.stat
    if args.cpu_time:
        CLOCK = time.process_time
    pin_allocator()
    torch.set_num_threads(args.threads)
    cl = args.cnnext_layout == "cl"
    print(f"cnnext from {os.path.dirname(cnnext.__file__)}; threads={args.threads} runs={args.runs}"
          f" ({args.stat}, {'cpu' if args.cpu_time else 'wall'} clock), float32, cnnext on {'channels_last' if cl else 'NCHW'} tensors;"
          " ratio = torch/cnnext")
    print(f"{'layer':22s} {'N':>2s} | {'fwd ms: t':>9s} {'t_cl':>7s} {'cnx':>7s} {'x nchw':>6s}"
          f" {'x best':>6s} | {'f+b ms: t':>9s} {'t_cl':>7s} {'cnx':>7s} {'x nchw':>6s}"
          f" {'x best':>6s}")
    ratios = {k: [] for k in ("f_nchw", "f_best", "fb_nchw", "fb_best")}
    for batch in (int(v) for v in args.batch.split(",")):
        for name, c, hw, k, s in LAYERS:
            if args.only and args.only not in name:
                continue
            m = bench_layer(batch, c, hw, k, s, args.runs, cl)
            row = []
            for kind in ("f", "fb"):
                t, tcl, cx = m[("torch", kind)], m[("torch_cl", kind)], m[("cnnext", kind)]
                rn, rb = t / cx, min(t, tcl) / cx
                ratios[kind + "_nchw"].append(rn)
                ratios[kind + "_best"].append(rb)
                row.append(f"{t:9.3f} {tcl:7.3f} {cx:7.3f} {rn:6.2f} {rb:6.2f}")
            print(f"{name:22s} {batch:2d} | {row[0]} | {row[1]}", flush=True)
    gm = lambda v: math.exp(sum(map(math.log, v)) / len(v)) if v else float("nan")
    print("geomean: fwd x nchw %.2f (min %.2f), x best %.2f (min %.2f); f+b x nchw %.2f (min %.2f),"
          " x best %.2f (min %.2f)" % (
              gm(ratios["f_nchw"]), min(ratios["f_nchw"]), gm(ratios["f_best"]),
              min(ratios["f_best"]), gm(ratios["fb_nchw"]), min(ratios["fb_nchw"]),
              gm(ratios["fb_best"]), min(ratios["fb_best"])))


if __name__ == "__main__":
    main()

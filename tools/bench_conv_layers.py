"""Times cnnext.functional.conv2d against torch.nn.functional.conv2d (oneDNN) on the conv layer
list of issue 6, forward and forward+backward, interleaved in one process, median of runs.

    python3 tools/bench_conv_layers.py [--threads 2] [--runs 7] [--only name,name] [--dtype float32]
                                       [--cpu-time]

Prints torch-time / cnnext-time (> 1: cnnext faster) and the geometric means. Both sides run
with glibc's mmap/trim thresholds raised, so freed pages are reused rather than re-faulted.
"""
import argparse
import ctypes
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

# This checkout's cnnext, not whichever one is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cnnext  # noqa: E402

# name: (N, C_in, HW, C_out, k, stride, pad, groups, dilation)
LAYERS = {
    "lenet_c1": (64, 1, 28, 6, 5, 1, 2, 1, 1),
    "lenet_c2": (64, 6, 14, 16, 5, 1, 0, 1, 1),
    "mnist_c2": (128, 10, 12, 20, 5, 1, 0, 1, 1),
    "cifar_c1": (64, 3, 32, 32, 3, 1, 1, 1, 1),
    "cifar_c2": (64, 32, 16, 64, 3, 1, 1, 1, 1),
    "resnet_stem": (8, 3, 224, 64, 7, 2, 3, 1, 1),
    "resnet_3x3_56": (8, 64, 56, 64, 3, 1, 1, 1, 1),
    "resnet_3x3_28": (8, 128, 28, 128, 3, 1, 1, 1, 1),
    "resnet_3x3_14": (8, 256, 14, 256, 3, 1, 1, 1, 1),
    "resnet_3x3_7": (8, 512, 7, 512, 3, 1, 1, 1, 1),
    "resnet_3x3_s2": (8, 128, 56, 256, 3, 2, 1, 1, 1),
    "resnet_1x1_56": (8, 256, 56, 64, 1, 1, 0, 1, 1),
    "vgg_3x3_112": (4, 128, 112, 128, 3, 1, 1, 1, 1),
    "mobilenet_dw_112": (8, 32, 112, 32, 3, 1, 1, 32, 1),
    "mobilenet_dw_s2": (8, 64, 112, 64, 3, 2, 1, 64, 1),
    "dilated_3x3": (8, 64, 56, 64, 3, 1, 2, 1, 2),
}


def pin_allocator():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except OSError:
        pass


CLOCK = time.perf_counter


def timed(fn):
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = CLOCK()
    fn()
    return CLOCK() - t, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--only", default="")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time process CPU time, not wall time: steadier on a machine other "
                    "processes load (meaningful with --threads 1; with more it counts spinning)")
    args = ap.parse_args()
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    pin_allocator()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    names = args.only.split(",") if args.only else list(LAYERS)
    print(f"cnnext from {os.path.dirname(cnnext.__file__)}")
    print(f"threads={args.threads} dtype={args.dtype} runs={args.runs} (median)"
          f" clock={'process cpu' if args.cpu_time else 'wall'}; ratio = torch/cnnext")
    print(f"{'layer':18s} {'torch fwd ms':>12s} {'cnx fwd ms':>11s} {'fwd x':>6s}"
          f" {'torch f+b ms':>12s} {'cnx f+b ms':>11s} {'f+b x':>6s} {'cnx flt/call':>12s}")
    ratios_f, ratios_b = [], []
    for name in names:
        n, c, hw, co, k, s, p, g, d = LAYERS[name]
        torch.manual_seed(0)
        x = torch.randn(n, c, hw, hw, dtype=dtype, requires_grad=True)
        w = torch.randn(co, c // g, k, k, dtype=dtype, requires_grad=True)
        b = torch.randn(co, dtype=dtype, requires_grad=True)
        conv = {"torch": F.conv2d, "cnnext": cnnext.functional.conv2d}
        go = None

        def fwd(f):
            with torch.no_grad():
                f(x, w, b, s, p, d, g)

        def fwdbwd(f):
            y = f(x, w, b, s, p, d, g)
            y.backward(go)

        with torch.no_grad():
            go = torch.randn_like(F.conv2d(x, w, b, s, p, d, g))
        times = {(side, kind): [] for side in conv for kind in ("f", "fb")}
        faults = []
        for r in range(args.runs + 1):  # the first run warms up
            for side, f in conv.items():
                tf, _ = timed(lambda: fwd(f))
                tb, fl = timed(lambda: fwdbwd(f))
                if r:
                    times[(side, "f")].append(tf)
                    times[(side, "fb")].append(tb)
                    if side == "cnnext":
                        faults.append(fl)
                x.grad = w.grad = b.grad = None
        med = {key: statistics.median(v) * 1e3 for key, v in times.items()}
        rf = med[("torch", "f")] / med[("cnnext", "f")]
        rb = med[("torch", "fb")] / med[("cnnext", "fb")]
        ratios_f.append(rf)
        ratios_b.append(rb)
        print(f"{name:18s} {med[('torch', 'f')]:12.3f} {med[('cnnext', 'f')]:11.3f} {rf:6.2f}"
              f" {med[('torch', 'fb')]:12.3f} {med[('cnnext', 'fb')]:11.3f} {rb:6.2f}"
              f" {statistics.median(faults):12.0f}", flush=True)
    gm = lambda v: math.exp(sum(map(math.log, v)) / len(v))
    print(f"{'geomean':18s} {'':12s} {'':11s} {gm(ratios_f):6.2f} {'':12s} {'':11s} {gm(ratios_b):6.2f}")


if __name__ == "__main__":
    main()

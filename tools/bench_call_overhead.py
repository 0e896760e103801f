"""Fixed cost of one call on tiny shapes, split by layer, against torch in the same run.

    flock /tmp/cnnext-timing.lock python tools/bench_call_overhead.py [--calls 2000] [--threads 1]

Layers of one call through cnnext.functional (each row a difference of two timings):
  python     cnnext.functional.<op>  minus  torch.ops.cnnext.<op> called directly
  autograd   torch.ops.cnnext.<op>   minus  the same call below the autograd key
  c++        the call below autograd: dispatcher, C++ checks, allocation and the kernel
  alloc      torch.empty of the output alone (part of c++)
Forward+backward rows time y = f(x); y.backward(g) with x (and the weight) requiring grad.
Every figure is the median over rounds of the mean per call; torch's F.<op> is timed in the
same rounds, interleaved, and the last column is torch time / cnnext time (> 1: cnnext faster).
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's cnnext

import torch
import torch.nn.functional as F

import cnnext
import cnnext.functional as CF

ops = torch.ops.cnnext


def per_call_us(fn, calls):
    for _ in range(20):
        fn()
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - start) / calls / 1e3


def below_autograd(fn):
    def run():
        with torch._C._AutoDispatchBelowAutograd():
            return fn()
    return run


def cases():
    def conv(n, c, h, oc, k, bias=True):
        x = torch.randn(n, c, h, h)
        w = torch.randn(oc, c, k, k)
        b = torch.randn(oc) if bias else None
        return x, w, b

    rows = []
    for name, (x, w, b) in (
        ("conv se-reduce 8x576x1x1->144", conv(8, 576, 1, 144, 1)),
        ("conv se-expand 8x144x1x1->576", conv(8, 144, 1, 576, 1)),
        ("conv 1x1x8x8 k3", conv(1, 1, 8, 1, 3)),
    ):
        params = ([1, 1], [0, 0], [1, 1], 1)
        rows.append((name, x, (w, b), lambda x, w, b: CF.conv2d(x, w, b),
                     lambda x, w, b: F.conv2d(x, w, b),
                     lambda x, w, b, p=params: ops.conv2d(x, w, b, *p),
                     lambda x, w, b: x.new_empty((x.shape[0], w.shape[0], x.shape[2] - w.shape[2] + 1,
                                                  x.shape[3] - w.shape[3] + 1))))
    gap = torch.randn(8, 96, 14, 14)
    rows.append(("adaptive_avg_pool2d 8x96x14x14->1", gap, (), lambda x: CF.adaptive_avg_pool2d(x, 1),
                 lambda x: F.adaptive_avg_pool2d(x, 1), lambda x: ops.adaptive_avg_pool2d(x, [1, 1]),
                 lambda x: x.new_empty((8, 96, 1, 1))))
    mp = torch.randn(1, 1, 8, 8)
    rows.append(("max_pool2d 1x1x8x8 k2", mp, (), lambda x: CF.max_pool2d(x, 2),
                 lambda x: F.max_pool2d(x, 2),
                 lambda x: ops.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False)[0],
                 lambda x: x.new_empty((1, 1, 4, 4))))
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    # One thread by default: the fixed cost is serial work, and on a busy machine a second
    # OpenMP thread adds wake-up noise to both sides.
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, cnnext {cnnext.__file__}, {torch.get_num_threads()} threads, "
          f"{args.calls} calls x {args.rounds} rounds; microseconds per call")
    print(f"{'case':38s} {'pass':8s} {'cnnext':>8s} {'python':>7s} {'autograd':>8s} {'c++':>7s} "
          f"{'alloc':>6s} {'torch':>7s} {'torch/cnnext':>12s}")
    for name, x, extra, ours, theirs, op, alloc in cases():
        for mode in ("fwd", "fwd+bwd"):
            if mode == "fwd":
                inputs = (x,) + extra
                fns = {
                    "cnnext": lambda: ours(*inputs),
                    "op": lambda: op(*inputs),
                    "below": below_autograd(lambda: op(*inputs)),
                    "alloc": lambda: alloc(*inputs),
                    "torch": lambda: theirs(*inputs),
                }
            else:
                inputs = tuple(t.detach().requires_grad_() if isinstance(t, torch.Tensor) else t
                               for t in (x,) + extra)
                grad = ours(*inputs).detach().clone().normal_()

                def step(f):
                    return lambda: f(*inputs).backward(grad)

                fns = {"cnnext": step(ours), "op": step(op), "torch": step(theirs)}
            samples = {k: [] for k in fns}
            for _ in range(args.rounds):
                for key, fn in fns.items():
                    samples[key].append(per_call_us(fn, args.calls if mode == "fwd" else args.calls // 4))
            t = {k: statistics.median(v) for k, v in samples.items()}
            python = t["cnnext"] - t["op"]
            autograd = t["op"] - t["below"] if "below" in t else float("nan")
            cpp = t.get("below", float("nan"))
            print(f"{name:38s} {mode:8s} {t['cnnext']:8.1f} {python:7.1f} {autograd:8.1f} {cpp:7.1f} "
                  f"{t.get('alloc', float('nan')):6.1f} {t['torch']:7.1f} {t['torch'] / t['cnnext']:11.2f}x")


if __name__ == "__main__":
    main()

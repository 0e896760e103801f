"""Interleaved GEMM benchmark: cnnext.gemm vs torch.mm in one process (median of runs).

usage: python3 tools/bench_gemm.py [--threads 2] [--reps 7] [--shapes MxNxK[:tt] ...]
"""
import argparse
import statistics
import time

import torch

import cnnext  # noqa: F401


def bench(fn, reps, min_time=0.05):
    fn()
    n = 1
    while True:  # calibrate inner loop to ~min_time
        t = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t
        if dt > min_time / 4:
            break
        n *= 2
    n = max(1, int(n * min_time / 4 / dt * 4 / 4))
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--isa", default="auto")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--shapes", nargs="*", default=["512x512x512", "1024x1024x1024", "2048x2048x2048"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print(f"threads={args.threads} isa={args.isa} dtype={args.dtype}")
    print(f"{'shape':>22} {'ours GF/s':>10} {'torch GF/s':>10} {'ratio':>6}")
    for s in args.shapes:
        dims, _, tr = s.partition(":")
        m, n, k = map(int, dims.split("x"))
        ta, tb = (tr + "nn")[:2] == "t" if False else (tr[:1] == "t"), (tr[1:2] == "t")
        a = torch.randn(k, m, dtype=dtype) if ta else torch.randn(m, k, dtype=dtype)
        b = torch.randn(n, k, dtype=dtype) if tb else torch.randn(k, n, dtype=dtype)
        c = torch.empty(m, n, dtype=dtype)
        ours = lambda: torch.ops.cnnext.gemm(a, b, ta, tb, 1.0, 0.0, None, args.isa)
        at_ = a.t() if ta else a
        bt_ = b.t() if tb else b
        theirs = lambda: torch.mm(at_, bt_, out=c)
        inner = bench(theirs, 1)
        to, tt = [], []
        for _ in range(args.reps):
            t = time.perf_counter()
            for _ in range(inner):
                ours()
            to.append((time.perf_counter() - t) / inner)
            t = time.perf_counter()
            for _ in range(inner):
                theirs()
            tt.append((time.perf_counter() - t) / inner)
        flop = 2.0 * m * n * k
        go, gt = flop / statistics.median(to) / 1e9, flop / statistics.median(tt) / 1e9
        print(f"{s:>22} {go:10.1f} {gt:10.1f} {go / gt:6.2f}")


if __name__ == "__main__":
    main()

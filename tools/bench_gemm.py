"""Interleaved GEMM benchmark: cnnext.gemm vs torch.mm in one process (median of runs).

usage: python3 tools/bench_gemm.py [--threads 2] [--reps 7] [--shapes MxNxK[:tt] ...]
"""
import argparse
import os
import statistics
import sys
import time

import torch

# This worktree's cnnext, not an installed one (sys.path[0] is tools/ when run as a script).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cnnext  # noqa: E402,F401


def pin_allocator():
    """Keep freed blocks in glibc's heap: the op allocates its output each call, torch.mm(out=)
    does not, and fresh pages cost ~1.2 us each to fault in on this VM."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
    libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1)


def calibrate(fn, target=0.05):
    """Calls per timed batch so one batch of fn takes about `target` seconds."""
    fn()
    n = 1
    while True:
        t = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t
        if dt > target / 4:
            return max(1, int(n * target / dt))
        n *= 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--isa", default="auto")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--cpu-time", action="store_true", help="process CPU time instead of wall time (1 thread on a loaded machine)")
    ap.add_argument("--shapes", nargs="*", default=["512x512x512", "1024x1024x1024", "2048x2048x2048"])
    args = ap.parse_args()
    pin_allocator()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.cpu_time else time.perf_counter
    dtype = getattr(torch, args.dtype)
    print(f"threads={args.threads} isa={args.isa} dtype={args.dtype} cnnext={cnnext.__file__}")
    print(f"{'shape':>22} {'ours GF/s':>10} {'torch GF/s':>10} {'ratio':>6}   (median; best-of: ours torch ratio)")
    for s in args.shapes:
        dims, _, tr = s.partition(":")
        m, n, k = map(int, dims.split("x"))
        ta, tb = tr[:1] == "t", tr[1:2] == "t"
        a = torch.randn(k, m, dtype=dtype) if ta else torch.randn(m, k, dtype=dtype)
        b = torch.randn(n, k, dtype=dtype) if tb else torch.randn(k, n, dtype=dtype)
        c = torch.empty(m, n, dtype=dtype)
        ours = lambda: torch.ops.cnnext.gemm(a, b, ta, tb, 1.0, 0.0, None, args.isa)
        at_ = a.t() if ta else a
        bt_ = b.t() if tb else b
        theirs = lambda: torch.mm(at_, bt_, out=c)
        inner = calibrate(theirs)
        to, tt = [], []
        for _ in range(args.reps):
            t = clock()
            for _ in range(inner):
                ours()
            to.append((clock() - t) / inner)
            t = clock()
            for _ in range(inner):
                theirs()
            tt.append((clock() - t) / inner)
        flop = 2.0 * m * n * k
        go, gt = flop / statistics.median(to) / 1e9, flop / statistics.median(tt) / 1e9
        bo, bt = flop / min(to) / 1e9, flop / min(tt) / 1e9
        print(f"{s:>22} {go:10.1f} {gt:10.1f} {go / gt:6.2f}   best: {bo:6.1f} {bt:6.1f} {bo / bt:5.2f}")


if __name__ == "__main__":
    main()

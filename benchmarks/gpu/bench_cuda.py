"""The benchmark suite on CUDA without the per-layer memory subprocesses, for one device call:
  python benchmarks/gpu/bench_cuda.py DTYPE OUT_DIR [BUDGET_S] [FILTER]
float32 runs with TF32 off on both sides (cuDNN exact float32 against our CUDA-core path), so
the float32 accuracy gate (1e-4) holds; float16/bfloat16 run on tensor cores on both sides.
SIGTERM (timeout) writes what was measured."""
import signal
import sys

import torch

from benchmarks.run import Config, run_suite


def main():
    dtype = getattr(torch, sys.argv[1])
    out_dir = sys.argv[2]
    budget = float(sys.argv[3]) if len(sys.argv) > 3 else 0.25
    filt = sys.argv[4] if len(sys.argv) > 4 else None
    torch.backends.cudnn.allow_tf32 = False
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    cfg = Config(device="cuda", dtype=dtype, quick=False, out_dir=out_dir, progress=False,
                 memory_layers=0, filter=filt,
                 timing=dict(warmup=3, min_reps=10, max_reps=300, budget_s=budget))
    _, _, text, _ = run_suite(cfg)
    print(text)


if __name__ == "__main__":
    main()

"""Inference with convert(model, fuse=True) against convert(model) and torch, on the suite's
ResNet-50 and MobileNetV2 (benchmarks/architectures; random weights, eval mode, float32 NCHW,
no grad).

Sides, timed interleaved in one process, median of --reps runs after warm-up:
  torch         the eval model as written (torch's conv + BatchNorm + ReLU)
  torch_folded  torch.fx.experimental.optimization.fuse (torch's own conv/BN folding)
  cnnext        cnnext.convert(model)
  cnnext_fused  cnnext.convert(model, fuse=True): BN folded, ReLU in the conv's epilogue
MobileNetV2 uses ReLU6, which the flag does not cover: there only BN folding applies.

Run under the timing lock: flock /tmp/cnnext-timing.lock python tools/bench_fuse.py
"""
import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse as torch_fold

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cnnext  # noqa: E402  (this checkout's, not an installed one)
from benchmarks.architectures.mobile import mobilenet_v2  # noqa: E402
from benchmarks.architectures.resnet import resnet50  # noqa: E402


def randomize_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.0)
    return model.eval()


STATS = {"median": statistics.median, "min": min}


def measure(sides, x, reps, stat):
    with torch.inference_mode():
        reference = sides["torch"](x)
        for name, fn in sides.items():
            torch.testing.assert_close(fn(x), reference, rtol=1e-3, atol=1e-3)
            fn(x)
        times = {name: [] for name in sides}
        for _ in range(reps):  # interleaved: a disturbance hits every side alike
            for name, fn in sides.items():
                t0 = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - t0)
    return {name: STATS[stat](t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=11)
    parser.add_argument("--batches", type=int, nargs="+", default=[1])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    # min: the least disturbed run, for a shared machine; median where it is quiet.
    parser.add_argument("--stat", choices=sorted(STATS), default="median")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 NCHW, 224x224, "
          f"{args.stat} of {args.reps} interleaved runs")
    print("| model | batch | torch ms | torch_folded ms | cnnext ms | cnnext_fused ms "
          "| fused vs cnnext | fused vs torch | fused vs torch_folded |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, make in (("resnet50", resnet50), ("mobilenet_v2", mobilenet_v2)):
        model = randomize_bn(make())
        sides = {"torch": model, "torch_folded": torch_fold(model),
                 "cnnext": cnnext.convert(model), "cnnext_fused": cnnext.convert(model, fuse=True)}
        for batch in args.batches:
            ms = {k: v * 1e3 for k, v in measure(sides, torch.randn(batch, 3, 224, 224),
                                                 args.reps, args.stat).items()}
            print(f"| {name} | {batch} | {ms['torch']:.1f} | {ms['torch_folded']:.1f} | "
                  f"{ms['cnnext']:.1f} | {ms['cnnext_fused']:.1f} | "
                  f"{ms['cnnext'] / ms['cnnext_fused']:.2f}x | "
                  f"{ms['torch'] / ms['cnnext_fused']:.2f}x | "
                  f"{ms['torch_folded'] / ms['cnnext_fused']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()

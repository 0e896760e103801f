"""Inference with convert(model, fuse=True) against convert(model) and torch, on a ResNet-50
and a MobileNetV2 layout (random weights, eval mode, float32 NCHW, no grad).

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


def conv_bn(cin, cout, k, stride=1, groups=1, act=nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act(inplace=True)) if act else nn.Sequential(*layers)


class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        cout = width * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)  # one module called three times, as torchvision's
        self.down = None
        if stride != 1 or cin != cout:
            self.down = conv_bn(cin, cout, 1, stride, act=None)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.down is None else self.down(x)))


def resnet50(classes=1000):
    layers, cin = [conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)], 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = width * 4
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn(cin, hidden, 1, act=nn.ReLU6)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   conv_bn(hidden, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


def mobilenet_v2(classes=1000):
    layers, cin = [conv_bn(3, 32, 3, 2, act=nn.ReLU6)], 32
    for expand, cout, repeats, stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2),
                                          (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                                          (6, 320, 1, 1)):
        for i in range(repeats):
            layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
            cin = cout
    layers += [conv_bn(cin, 1280, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(1280, classes)]
    return nn.Sequential(*layers)


def randomize_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.0)
    return model.eval()


def measure(sides, x, reps):
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
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=11)
    parser.add_argument("--batches", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 NCHW, 224x224")
    print("| model | batch | torch ms | torch_folded ms | cnnext ms | cnnext_fused ms "
          "| fused vs cnnext | fused vs torch | fused vs torch_folded |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, make in (("resnet50", resnet50), ("mobilenet_v2", mobilenet_v2)):
        model = randomize_bn(make())
        sides = {"torch": model, "torch_folded": torch_fold(model),
                 "cnnext": cnnext.convert(model), "cnnext_fused": cnnext.convert(model, fuse=True)}
        for batch in args.batches:
            ms = {k: v * 1e3 for k, v in measure(sides, torch.randn(batch, 3, 224, 224),
                                                 args.reps).items()}
            print(f"| {name} | {batch} | {ms['torch']:.1f} | {ms['torch_folded']:.1f} | "
                  f"{ms['cnnext']:.1f} | {ms['cnnext_fused']:.1f} | "
                  f"{ms['cnnext'] / ms['cnnext_fused']:.2f}x | "
                  f"{ms['torch'] / ms['cnnext_fused']:.2f}x | "
                  f"{ms['torch_folded'] / ms['cnnext_fused']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()

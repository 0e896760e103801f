"""channels_last through whole models: cnnext.convert(model) of a channels_last model keeps
every conv and pooling activation channels_last (no layer hands an NCHW tensor on, so nothing
copies between layouts), agrees with torch in inference and in a training step, and one
channels_last conv call needs no more extra memory than torch's (no activation-sized copies)."""
import itertools
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import cnnext
from benchmarks.architectures.mobile import mobilenet_v3_small
from benchmarks.architectures.resnet import resnet18

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CL = torch.channels_last
LAYERS = (torch.nn.Conv2d, torch.nn.MaxPool2d, torch.nn.AvgPool2d, torch.nn.AdaptiveAvgPool2d,
          torch.nn.AdaptiveMaxPool2d)


def _is_cl(t):
    return t.dim() == 4 and t.is_contiguous(memory_format=CL)


@pytest.mark.parametrize("builder", [resnet18, mobilenet_v3_small], ids=lambda b: b.__name__)
def test_converted_channels_last_model_keeps_the_layout_and_matches_torch(builder):
    torch.manual_seed(0)
    model = builder(num_classes=10).to(memory_format=CL)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=CL)
    converted = cnnext.convert(model)
    seen = []

    def check(module, args, output):
        # Maps that are 1x1 are both layouts at once: only larger ones say anything.
        for t in (args[0], output):
            if t.dim() == 4 and t.shape[-1] * t.shape[-2] > 1:
                seen.append(type(module).__name__)
                assert _is_cl(t), type(module).__name__

    hooks = [m.register_forward_hook(check) for m in converted.modules() if isinstance(m, LAYERS)]
    # Inference.
    model.eval(), converted.eval()
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x), rtol=1e-4, atol=1e-4)
    assert "Conv2d" in seen and any("Pool" in s for s in seen)  # SE and head pools included
    # A training step: same gradients (the same dropout masks: the same seed).
    model.train(), converted.train()
    for m in (model, converted):
        m.zero_grad()
        torch.manual_seed(1)
        m(x).square().mean().backward()
    for (name, p), q in zip(model.named_parameters(), converted.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=2e-3, atol=2e-4, msg=name)
    for h in hooks:
        h.remove()


PEAK_CHILD = """
import json, resource, torch
import cnnext
torch.manual_seed(0)
n, c, h, w, o, k, s, p = {shape}
# Made in place, so no NCHW temporary raises the peak before the call.
x = torch.empty(n, c, h, w, memory_format=torch.channels_last).normal_()
wt = torch.randn(o, c, k, k) * 0.05
f = torch.nn.functional.conv2d if {use_torch} else cnnext.functional.conv2d
f(torch.randn(1, c, 2 * k, 2 * k).contiguous(memory_format=torch.channels_last), wt, None, s, p)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
y = f(x, wt, None, s, p)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = y.numel() * y.element_size()
print(json.dumps(dict(extra=(after - before) * 1024, out=out, cl=y.is_contiguous(
    memory_format=torch.channels_last))))
"""


def _peak(shape, use_torch):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = textwrap.dedent(PEAK_CHILD.format(shape=tuple(shape), use_torch=use_torch))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("shape", [
    (8, 256, 56, 56, 64, 1, 1, 0),    # ResNet-50 1x1 reduce: 25.7 MB input
    (8, 64, 56, 56, 64, 3, 1, 1),     # ResNet 3x3
    (8, 256, 56, 56, 128, 1, 2, 0),   # strided 1x1 (downsample)
], ids=["1x1", "3x3", "1x1s2"])
def test_channels_last_call_peak_memory_not_above_torch(shape):
    """Peak resident memory a channels_last conv call adds beyond its output: an NCHW copy of
    the input would add as much as the input (25.7 MB for the 1x1 row)."""
    mine, theirs = _peak(shape, False), _peak(shape, True)
    assert mine["cl"] and theirs["cl"]
    input_bytes = 4 * shape[0] * shape[1] * shape[2] * shape[3]
    print(f"\n{shape}: extra peak cnnext {mine['extra'] / 2**20:.1f} MiB, torch "
          f"{theirs['extra'] / 2**20:.1f} MiB, output {mine['out'] / 2**20:.1f} MiB, input "
          f"{input_bytes / 2**20:.1f} MiB")
    # Page-granular RSS: allow 2 MiB of noise; an activation copy would be tens of MiB.
    assert mine["extra"] <= theirs["extra"] + (2 << 20)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_and_gradient_strides_match_torch_for_channels_last_inputs(dtype):
    """Whatever path a call takes (the fast path for channels_last CPU inputs included), the
    output and grad_input strides are torch's, for unambiguous and ambiguous layouts alike
    (1x1 maps and single channels, whose channels_last strides are also NCHW strides)."""
    shapes = [(2, 8, 9, 7), (1, 28, 1, 1), (2, 28, 1, 1), (1, 1, 7, 7), (3, 5, 1, 6)]
    for shape in shapes:
        for make in (lambda s: torch.randn(s, dtype=dtype).contiguous(memory_format=CL),
                     lambda s: torch.empty(s, dtype=dtype, memory_format=CL).normal_(),
                     lambda s: torch.randn(s, dtype=dtype).to(memory_format=CL)):
            x = make(shape)
            for w, grad in itertools.product(
                    (torch.randn(6, shape[1], 3, 1, dtype=dtype),
                     torch.randn(6, shape[1], 3, 1, dtype=dtype).contiguous(memory_format=CL),
                     torch.randn(6, shape[1], 1, 1, dtype=dtype).to(memory_format=CL)),
                    (False, True)):
                xs = [x.clone(memory_format=torch.preserve_format).requires_grad_(grad)
                      for _ in range(2)]
                pad = (w.shape[2] // 2, 0)
                y_t = torch.nn.functional.conv2d(xs[0], w, padding=pad)
                y_c = cnnext.functional.conv2d(xs[1], w, padding=pad)
                assert y_c.stride() == y_t.stride(), (shape, x.stride(), grad)
                torch.testing.assert_close(y_c, y_t)
                if grad:
                    g = torch.randn_like(y_t)
                    y_t.backward(g)
                    y_c.backward(g)
                    # Strides of size-1 dims may differ (torch gives grad_input channels_last
                    # strides on a 1x1 map when the weight is channels_last): same layouts.
                    for fmt in (torch.contiguous_format, CL):
                        assert xs[1].grad.is_contiguous(memory_format=fmt) == \
                            xs[0].grad.is_contiguous(memory_format=fmt), (shape, x.stride())
                    if 1 not in shape:
                        assert xs[1].grad.stride() == xs[0].grad.stride(), (shape, x.stride())
                    torch.testing.assert_close(xs[1].grad, xs[0].grad)

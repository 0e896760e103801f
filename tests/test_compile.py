"""torch.compile of models built from cnnext.Conv2d: one graph (no breaks: the operators have
fake kernels and registered autograd), same forward and backward as eager."""
import pytest
import torch
import torch.nn as nn

import cnnext
from conftest import assert_close


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = cnnext.Conv2d(3, 8, 3, padding=1)
        self.conv2 = cnnext.Conv2d(8, 8, 3, stride=2, groups=2, padding="valid")
        self.conv3 = cnnext.Conv2d(8, 4, (2, 3), padding="same", padding_mode="reflect")

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.conv3(x)


def _eager_and_compiled(model, compiled, x):
    results = []
    for m in (model, compiled):
        for p in model.parameters():
            p.grad = None
        xi = x.clone().requires_grad_()
        out = m(xi)
        out.square().sum().backward()
        results.append((out.detach(), xi.grad, [p.grad.clone() for p in model.parameters()]))
    return results


def _check_compiled(model, compiled, x):
    (out, gx, gp), (cout, cgx, cgp) = _eager_and_compiled(model, compiled, x)
    assert_close(cout, out)
    assert_close(cgx, gx)
    for a, e in zip(cgp, gp):
        assert_close(a, e)


def test_compile_fullgraph_matches_eager():
    # AOT autograd traces forward and backward through the fake kernels, then runs our kernels.
    torch._dynamo.reset()
    model = SmallNet()
    _check_compiled(model, torch.compile(model, fullgraph=True, backend="aot_eager"),
                    torch.randn(2, 3, 12, 11))


def test_compile_inductor_fullgraph_matches_eager():
    # The default backend: inductor generates code around our operators (extern kernels) and
    # relies on the fake kernels' strides. Kept small: inductor compiles C++ for each graph.
    torch._dynamo.reset()
    model = nn.Sequential(cnnext.Conv2d(3, 4, 3, padding=1), nn.ReLU(), cnnext.Conv2d(4, 2, 1))
    _check_compiled(model, torch.compile(model, fullgraph=True), torch.randn(2, 3, 8, 7))


def test_compile_dynamic_shapes():
    # dynamic=True: the fake kernel computes output sizes on SymInts, so one graph serves
    # several batch and image sizes without recompiling for each (sizes 0 and 1 are
    # specialised by torch.compile itself, so they are not used here).
    torch._dynamo.reset()
    model = SmallNet()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend=counter)
    for shape in ((2, 3, 12, 11), (3, 3, 9, 14), (4, 3, 16, 16)):
        _check_compiled(model, compiled, torch.randn(shape))
    assert counter.frame_count == 1, f"recompiled {counter.frame_count} times"


def test_compile_functional_with_batchless_and_channels_last():
    torch._dynamo.reset()
    w = torch.randn(4, 3, 3, 3)

    def f(x):
        return cnnext.functional.conv2d(x, w, None, 1, "same", 2, 1).relu()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    for x in (torch.randn(3, 7, 6), torch.randn(2, 3, 7, 6).to(memory_format=torch.channels_last)):
        assert_close(compiled(x), f(x))


@pytest.mark.parametrize(
    "kwargs,words",
    [(dict(padding=(0, -2)), "padding=[0, -2]"), (dict(stride=0), "stride=[0, 0]"),
     (dict(dilation=3), "Kernel size")],
)
def test_compile_reports_bad_arguments(kwargs, words):
    # The fake kernel checks what it needs to form sizes, with the real kernel's messages.
    torch._dynamo.reset()
    w = torch.randn(4, 3, 3, 3)
    compiled = torch.compile(lambda x: cnnext.functional.conv2d(x, w, **kwargs), fullgraph=True,
                             backend="aot_eager")
    with pytest.raises(RuntimeError, match=r"cnnext\.conv2d: .*" + words.replace("[", r"\[")):
        compiled(torch.randn(1, 3, 5, 5))

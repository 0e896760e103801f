"""Whole networks: convert() of a LeNet and a small ResNet-style net matches the original in
outputs and gradients; torch.compile(fullgraph=True) of the converted net matches eager."""
import copy

import pytest
import torch
from torch import nn

import cnnext
from conftest import assert_close


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.AvgPool2d(2, ceil_mode=True),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 5 * 5, 32), nn.ReLU(),
                                        nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class TinyResNet(nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.blocks = nn.Sequential(BasicBlock(8, 8, 1), BasicBlock(8, 16, 2))
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def _pool_types(model):
    return {type(m) for m in model.modules() if "Pool" in type(m).__name__}


def _outputs_and_grads(model, x):
    x = x.detach().clone().requires_grad_()
    out = model(x)
    g = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(out, [x] + list(model.parameters()), g.to(out.device))
    return out, grads


@pytest.mark.parametrize("make,shape", [(LeNet, (3, 1, 28, 28)), (TinyResNet, (2, 3, 56, 56))])
@pytest.mark.parametrize("channels_last", [False, True])
def test_convert_matches_original(device, make, shape, channels_last):
    model = make().double().to(device).train()
    converted = cnnext.convert(model)
    assert _pool_types(converted) <= {cnnext.MaxPool2d, cnnext.AvgPool2d,
                                      cnnext.AdaptiveAvgPool2d, cnnext.AdaptiveMaxPool2d}
    assert all(type(m) is not nn.Conv2d for m in converted.modules())
    x = torch.randn(shape, dtype=torch.float64, device=device)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    ref_model = copy.deepcopy(model)  # BatchNorm running stats update in train mode
    out, grads = _outputs_and_grads(converted, x)
    ref, ref_grads = _outputs_and_grads(ref_model, x)
    assert_close(out, ref)
    for a, b in zip(grads, ref_grads):
        assert_close(a, b)
    for a, b in zip(converted.buffers(), ref_model.buffers()):
        assert_close(a.double(), b.double())


def test_convert_keeps_module_configuration():
    model = nn.Sequential(nn.MaxPool2d((3, 2), (2, 1), (1, 0), 2, return_indices=True,
                                       ceil_mode=True),
                          nn.AvgPool2d(3, 1, 1, True, False, 4), nn.AdaptiveMaxPool2d((2, None)),
                          nn.AdaptiveAvgPool2d(3))
    converted = cnnext.convert(model)
    assert [type(m) for m in converted] == [cnnext.MaxPool2d, cnnext.AvgPool2d,
                                            cnnext.AdaptiveMaxPool2d, cnnext.AdaptiveAvgPool2d]
    assert repr(converted) == repr(model)
    x = torch.randn(2, 3, 9, 8)
    out, idx = converted[0](x)
    ref, ref_idx = model[0](x)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
    for i in range(1, 4):
        assert_close(converted[i](x), model[i](x))


def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    model = cnnext.convert(TinyResNet().eval())
    x = torch.randn(2, 3, 56, 56)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        assert_close(compiled(x), model(x))
    # Training step through the compiled graph (forward + backward of every pool op).
    model.train()
    xg = x.clone().requires_grad_()
    out = compiled(xg)
    (g_compiled,) = torch.autograd.grad(out.sum(), xg)
    xe = x.clone().requires_grad_()
    (g_eager,) = torch.autograd.grad(model(xe).sum(), xe)
    assert_close(g_compiled, g_eager)


def test_compile_dynamic_shapes_match_eager():
    """The fake kernels' shape arithmetic also works on symbolic sizes (ceil_mode included)."""
    torch._dynamo.reset()

    def pools(f, x):
        out, idx = f.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
        return (out.sum() + f.avg_pool2d(x, 2, ceil_mode=True).sum()
                + f.adaptive_avg_pool2d(x, (2, None)).sum()
                + f.adaptive_max_pool2d(x, 3).sum()), idx

    compiled = torch.compile(lambda x: pools(cnnext.functional, x), dynamic=True, fullgraph=True)
    for shape in [(2, 3, 9, 8), (1, 2, 12, 7)]:
        x = torch.randn(shape)
        (a, i), (b, j) = compiled(x), pools(torch.nn.functional, x)
        assert_close(a, b)
        assert torch.equal(i, j)

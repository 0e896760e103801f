"""Inference folding: the conv2d operator's relu flag (kernel, fake kernel, autograd, opcheck)
and convert(model, fuse=True), which folds BatchNorm2d into convs and ReLUs into their epilogue."""
import pytest
import torch
from torch import nn

import cnnext
import cnnext.functional as CF
from conftest import assert_close
from test_models import TinyResNet
# opcheck's one-thread fixture (autouse here too) and its sample maker.
from test_opcheck import _one_thread, _t  # noqa: F401

ops = torch.ops.cnnext


RELU_SAMPLES = [
    (_t(2, 3, 6, 5), _t(4, 3, 3, 3), _t(4), [1, 1], [1, 1], [1, 1], 1, True),
    (_t(1, 4, 7, 7), _t(4, 1, 3, 3), None, [2, 1], [1, 1], [1, 1], 4, True),
    (_t(2, 4, 6, 6, dtype=torch.float32).to(memory_format=torch.channels_last),
     _t(6, 2, 1, 1, dtype=torch.float32), _t(6, dtype=torch.float32), [1, 1], [0, 0], [1, 1], 2,
     True),
]


@pytest.mark.parametrize("sample", range(len(RELU_SAMPLES)))
def test_opcheck_conv2d_relu(sample):
    torch.library.opcheck(ops.conv2d.default, RELU_SAMPLES[sample])


@pytest.mark.parametrize("sample", range(len(RELU_SAMPLES)))
def test_relu_flag_matches_conv_then_relu(sample):
    x, w, b, *params, _ = RELU_SAMPLES[sample]
    fused = ops.conv2d(x, w, b, *params, True)
    reference = torch.relu(torch.nn.functional.conv2d(x, w, b, *params))
    assert_close(fused, reference)
    assert (fused >= 0).all() and (fused == 0).any() and (fused > 0).any()
    grad = torch.randn_like(fused)
    got = torch.autograd.grad(fused, [t for t in (x, w, b) if t is not None], grad)
    want = torch.autograd.grad(reference, [t for t in (x, w, b) if t is not None], grad)
    for g, r in zip(got, want):
        assert_close(g, r)


@pytest.mark.parametrize("groups", [1, 4])  # the GEMM and the depthwise kernels
def test_relu_flag_on_device(device, groups):
    x = torch.randn(2, 4, 9, 9, device=device)
    w = torch.randn(4, 4 // groups, 3, 3, device=device)
    b = torch.randn(4, device=device)
    fused = ops.conv2d(x, w, b, [1, 1], [1, 1], [1, 1], groups, True)
    assert_close(fused, torch.relu(torch.nn.functional.conv2d(x, w, b, padding=1, groups=groups)))


def test_relu_flag_gradcheck_and_nan():
    x, w, b = _t(1, 2, 4, 4), _t(2, 2, 3, 3), _t(2)
    torch.autograd.gradcheck(lambda *a: CF.conv2d(*a, padding=1, _relu=True), (x, w, b))
    torch.autograd.gradgradcheck(lambda *a: CF.conv2d(*a, padding=1, _relu=True), (x, w, b))
    # NaN stays NaN, as through torch.relu.
    x_nan = x.detach().clone()
    x_nan[0, 0, 2, 2] = float("nan")
    out = CF.conv2d(x_nan, w.detach(), None, padding=1, _relu=True)
    assert torch.equal(out.isnan(), torch.relu(torch.nn.functional.conv2d(
        x_nan, w.detach(), None, padding=1)).isnan())


def test_relu_flag_forward_ad_and_other_dtypes():
    x, w = torch.randn(1, 2, 5, 5, dtype=torch.float64), torch.randn(3, 2, 3, 3, dtype=torch.float64)
    dx = torch.randn_like(x)
    got = torch.func.jvp(lambda t: CF.conv2d(t, w, _relu=True), (x,), (dx,))
    want = torch.func.jvp(lambda t: torch.relu(torch.nn.functional.conv2d(t, w)), (x,), (dx,))
    for g, r in zip(got, want):
        assert_close(g, r)
    xi, wi = torch.randint(-3, 4, (1, 2, 5, 5)), torch.randint(-3, 4, (3, 2, 3, 3))
    assert torch.equal(CF.conv2d(xi, wi, _relu=True), torch.relu(torch.nn.functional.conv2d(xi, wi)))
    xh, wh = x.to(torch.bfloat16), w.to(torch.bfloat16)
    assert_close(CF.conv2d(xh, wh, _relu=True), torch.relu(torch.nn.functional.conv2d(xh, wh)))


class ConvBnReluNet(nn.Module):
    """Every pattern the fuser meets: conv-bn-relu (module and functional ReLU), conv-relu,
    conv-bn without ReLU, a BN without running statistics (not folded), a conv whose output
    is used twice (not fused)."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                                   nn.ReLU(inplace=True))
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
        self.bn2 = nn.BatchNorm2d(8, affine=False)
        self.conv3 = nn.Conv2d(8, 8, 1)
        self.conv4 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn4 = nn.BatchNorm2d(8, track_running_stats=False)
        self.conv5 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.block(x)
        x = self.bn2(self.conv2(x))
        y = self.conv3(x)
        x = nn.functional.relu(y) + y  # conv3's output has two users: stays unfused
        x = self.bn4(self.conv4(x)).relu()
        return torch.relu(self.conv5(x))


def _randomize_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None:
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                if m.affine:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5)


@pytest.mark.parametrize("make", [ConvBnReluNet, TinyResNet], ids=["patterns", "tiny_resnet"])
def test_fuse_matches_eval_model(make):
    model = make().double()
    _randomize_bn(model)
    model.eval()
    x = torch.randn(2, 3, 20, 20, dtype=torch.float64)
    fused = cnnext.convert(model, fuse=True)
    assert isinstance(fused, torch.fx.GraphModule) and not fused.training
    assert_close(fused(x), model(x))
    kinds = [type(m) for m in fused.modules()]
    folded = sum(isinstance(m, nn.BatchNorm2d) and m.running_mean is not None
                 for m in model.modules())
    assert sum(t is nn.BatchNorm2d for t in kinds) == sum(
        isinstance(m, nn.BatchNorm2d) for m in model.modules()) - folded
    assert cnnext.Conv2dReLU in kinds and nn.Conv2d not in kinds
    # The original is untouched.
    assert all(type(m) is not cnnext.Conv2d for m in model.modules())


def test_fuse_counts_on_patterns():
    model = ConvBnReluNet().eval()
    fused = cnnext.convert(model, fuse=True)
    modules = dict(fused.named_modules())
    assert type(modules["block.0"]) is cnnext.Conv2dReLU  # conv-bn-relu
    assert type(modules["conv2"]) is cnnext.Conv2d and "bn2" not in modules  # conv-bn
    assert type(modules["conv3"]) is cnnext.Conv2d  # output used twice
    assert type(modules["conv4"]) is cnnext.Conv2d and "bn4" in modules  # batch statistics
    assert type(modules["conv5"]) is cnnext.Conv2dReLU  # torch.relu


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return self.conv(x) if x.sum() > 0 else x


def test_fuse_refuses_training_mode_inplace_and_untraceable():
    with pytest.raises(RuntimeError, match="torch.fx"):
        cnnext.convert(DataDependent().eval(), fuse=True)
    model = ConvBnReluNet()
    with pytest.raises(RuntimeError, match=r"model\.eval\(\)"):
        cnnext.convert(model, fuse=True)
    with pytest.raises(ValueError, match="inplace"):
        cnnext.convert(model.eval(), inplace=True, fuse=True)

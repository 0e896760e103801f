"""Native bfloat16/float16 pooling, the values-only max pooling path, and windows that hold no
input element, against torch (or, where torch itself is wrong, a float64 reference built from
plain tensor indexing).

Shapes are chosen so every CPU path runs: NCHW rows wide enough for the vector body, its
overlapping last block and scalar edges (W = 37); channels_last with C = 19 (a full vector of
channels at every ISA's width, then a scalar tail)."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import cnnext.functional as CF
from conftest import assert_close

ops = torch.ops.cnnext
HALF = [torch.bfloat16, torch.float16]
MAX_CONFIGS = [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3, stride=1, padding=1),
               dict(kernel_size=2), dict(kernel_size=3, stride=2, ceil_mode=True),
               dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1))]
AVG_CONFIGS = [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3, stride=1, padding=1),
               dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                         count_include_pad=False)]


def _input(dtype, channels_last, shape=(2, 19, 9, 37), special=True):
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(-40, 40, shape, generator=gen).to(torch.float64) / 8  # ties, exact in half
    if special:
        flat = x.view(-1)
        flat[torch.randperm(flat.numel(), generator=gen)[: flat.numel() // 23]] = float("-inf")
        flat[torch.randperm(flat.numel(), generator=gen)[: flat.numel() // 29]] = float("nan")
        x[1, 3] = float("-inf")
    x = x.to(dtype)
    return x.to(memory_format=torch.channels_last) if channels_last else x


def _same_values(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a.isnan(), b.isnan())
    assert torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", HALF + [torch.float32])
def test_max_pool_every_path(monkeypatch, isa, channels_last, dtype):
    """Values-only and indexed kernels, each ISA: exact values (NaN, -inf, ties) and indices."""
    monkeypatch.setenv("CNNEXT_ISA", isa)
    x = _input(dtype, channels_last)
    for args in MAX_CONFIGS:
        ref, ref_idx = F.max_pool2d(x, return_indices=True, **args)
        with torch.no_grad():
            _same_values(CF.max_pool2d(x, **args), ref)  # values-only kernel
        out, idx = CF.max_pool2d(x, return_indices=True, **args)
        _same_values(out, ref)
        assert torch.equal(idx, ref_idx), args
        assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    for size in [(4, 3), 1]:
        ref, ref_idx = F.adaptive_max_pool2d(x, size, True)
        out, idx = CF.adaptive_max_pool2d(x, size, True)
        _same_values(out, ref)
        assert torch.equal(idx, ref_idx)


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", HALF)
def test_avg_pool_every_path(monkeypatch, isa, channels_last, dtype):
    """Average pooling accumulates in float32: within one rounding of torch's result."""
    monkeypatch.setenv("CNNEXT_ISA", isa)
    x = _input(dtype, channels_last, special=False)
    for args in AVG_CONFIGS:
        out = CF.avg_pool2d(x, **args)
        assert out.dtype == dtype
        assert_close(out, F.avg_pool2d(x, **args), dtype)
    for size in [1, (4, 3), (9, 37)]:
        assert_close(CF.adaptive_avg_pool2d(x, size), F.adaptive_avg_pool2d(x, size), dtype)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", HALF)
def test_half_gradients_match_torch(channels_last, dtype):
    x = _input(dtype, channels_last, shape=(2, 17, 8, 21), special=False)
    cases = [(lambda m, t: m.max_pool2d(t, 3, 2, 1)), (lambda m, t: m.avg_pool2d(t, 3, 1, 1)),
             (lambda m, t: m.adaptive_avg_pool2d(t, 1)), (lambda m, t: m.adaptive_max_pool2d(t, 3))]
    for fn in cases:
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = fn(CF, xa), fn(F, xb)
        g = torch.randn(ya.shape).to(dtype)
        (ga,) = torch.autograd.grad(ya, xa, g)
        (gb,) = torch.autograd.grad(yb, xb, g)
        assert ga.dtype == dtype
        assert_close(ga, gb, dtype)


def test_values_only_op_and_its_gradient():
    """max_pool2d_values equals max_pool2d's values; asked for a gradient anyway, it gives the
    indexed op's."""
    x = _input(torch.float64, False, shape=(2, 3, 9, 10), special=False) + torch.rand(2, 3, 9, 10,
                                                                                     dtype=torch.float64) / 64
    args = ([3, 3], [2, 2], [1, 1], [1, 1], True)
    torch.library.opcheck(ops.max_pool2d_values, (x.requires_grad_(),) + args)
    values = ops.max_pool2d_values(x, *args)
    out, _ = ops.max_pool2d(x, *args)
    assert torch.equal(values, out)
    g = torch.randn_like(out)
    (ga,) = torch.autograd.grad(values, x, g)
    (gb,) = torch.autograd.grad(out, x, g)
    assert torch.equal(ga, gb)


@pytest.mark.parametrize("dtype", HALF)
def test_half_batch_zero_and_views(dtype):
    empty = torch.zeros(0, 19, 8, 8, dtype=dtype)
    assert CF.max_pool2d(empty, 2).shape == F.max_pool2d(empty, 2).shape
    assert CF.avg_pool2d(empty, 2).shape == F.avg_pool2d(empty, 2).shape
    base = _input(dtype, False, shape=(2, 20, 9, 40), special=False)
    view = base[:, 1::2, :, 3:].transpose(2, 3)  # non-contiguous, neither layout
    _same_values(CF.max_pool2d(view, 3, 2, 1), F.max_pool2d(view, 3, 2, 1))
    assert_close(CF.avg_pool2d(view, 2), F.avg_pool2d(view, 2), dtype)


# ---- windows with no input element ---------------------------------------------------------
def _reference_max_pool(x, kernel, stride, padding, dilation, ceil_mode):
    """float64 max pooling by plain indexing: values, and the input gradient of sum(g * out)
    for a given g (an empty window gives -inf and no gradient)."""
    n, c, h, w = x.shape

    def size(i, k, s, p, d):
        out = math.floor((i + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) / s) + 1
        return out - 1 if ceil_mode and (out - 1) * s >= i + p else out

    oh, ow = (size(h, kernel[0], stride[0], padding[0], dilation[0]),
              size(w, kernel[1], stride[1], padding[1], dilation[1]))
    out = torch.full((n, c, oh, ow), -math.inf, dtype=torch.float64)
    where = {}
    for i, j in itertools.product(range(oh), range(ow)):
        taps = [(i * stride[0] - padding[0] + a * dilation[0], j * stride[1] - padding[1] + b * dilation[1])
                for a in range(kernel[0]) for b in range(kernel[1])]
        taps = [(r, s) for r, s in taps if 0 <= r < h and 0 <= s < w]
        if not taps:
            continue
        vals = torch.stack([x[:, :, r, s] for r, s in taps], dim=-1)
        best = vals.argmax(dim=-1)
        out[:, :, i, j] = vals.gather(-1, best.unsqueeze(-1)).squeeze(-1)
        where[(i, j)] = (taps, best)
    return out, where


def _reference_grad(x, where, g):
    grad = torch.zeros(x.shape, dtype=torch.float64)
    for (i, j), (taps, best) in where.items():
        for t, (r, s) in enumerate(taps):
            grad[:, :, r, s] += torch.where(best == t, g[:, :, i, j], 0.0)
    return grad


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("hw,kernel,stride,padding,dilation,ceil_mode", [
    ((1, 6), (2, 1), (1, 1), (1, 0), (2, 1), True),   # every window empty along H
    ((1, 7), (2, 3), (2, 2), (1, 1), (2, 3), True),
    ((5, 1), (3, 2), (1, 1), (1, 1), (1, 2), False),  # empty along W
    ((4, 6), (2, 2), (1, 1), (1, 1), (3, 1), True),   # some windows empty, some not
])
def test_empty_windows_get_no_gradient(device, channels_last, hw, kernel, stride, padding,
                                       dilation, ceil_mode):
    x = torch.randperm(2 * 3 * hw[0] * hw[1], dtype=torch.float64).reshape(2, 3, *hw) / 7
    ref, where = _reference_max_pool(x, kernel, stride, padding, dilation, ceil_mode)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    xa = x.to(device).requires_grad_()
    out, idx = CF.max_pool2d(xa, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    assert torch.equal(out.detach().cpu(), ref)
    g = torch.randn(ref.shape, dtype=torch.float64)
    (grad,) = torch.autograd.grad(out, xa, g.to(device))
    assert torch.equal(grad.cpu(), _reference_grad(x, where, g))
    # A corrupt index in a window that does hold elements still raises (CPU: the CUDA backward
    # gathers per input element and never reads it).
    full = [(i, j) for i, j in itertools.product(range(ref.shape[2]), range(ref.shape[3]))
            if (i, j) in where]
    if full and device == "cpu":
        idx = idx.cpu()
        bad = idx.clone()
        bad[0, 0, full[0][0], full[0][1]] = hw[0] * hw[1]
        with pytest.raises(RuntimeError, match="outside"):
            ops.max_pool2d_backward(g, x, bad, list(kernel), list(stride), list(padding),
                                    list(dilation), ceil_mode)


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", HALF + [torch.float32])
def test_channels_last_channel_blocks(monkeypatch, isa, dtype):
    """channels_last pools run blocks of 8 (average) or 4 (max) vectors of channels per window
    pass, then one block of 4, 2 and 1 vectors where they fit, then one vector overlapping the
    previous: C = 83, 149 and 237 reach each at every ISA width (16, 8, 4 lanes)."""
    monkeypatch.setenv("CNNEXT_ISA", isa)
    for channels in (83, 149, 237):
        x = _input(dtype, True, shape=(2, channels, 6, 7))
        for args in MAX_CONFIGS[:3]:
            ref, ref_idx = F.max_pool2d(x, return_indices=True, **args)
            with torch.no_grad():
                _same_values(CF.max_pool2d(x, **args), ref)
            out, idx = CF.max_pool2d(x, return_indices=True, **args)
            _same_values(out, ref)
            assert torch.equal(idx, ref_idx), (channels, args)
        finite = _input(dtype, True, shape=(2, channels, 6, 7), special=False)
        for args in AVG_CONFIGS:
            assert_close(CF.avg_pool2d(finite, **args), F.avg_pool2d(finite, **args), dtype)
        assert_close(CF.adaptive_avg_pool2d(finite, 1), F.adaptive_avg_pool2d(finite, 1), dtype)

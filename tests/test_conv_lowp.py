"""bfloat16 and float16 convolution on the CPU: every path (AVX512-BF16 pair dot products,
float32 kernels on converted copies) against an exact float64 computation on the same rounded
inputs, and against torch's own result.

Tolerance: the kernels accumulate K = C_in/groups * kh * kw exact products (a bfloat16 or
float16 product is exact in float32) in float32 and round once to the output dtype. The error
is at most half an ulp of the output dtype (2**-8 relative for bfloat16, 2**-11 for float16)
plus the float32 accumulation error, at most about K * 2**-24 * sum |x| |w| over the window.
"""
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch._prims_common import suggest_memory_format

import cnnext
from cnnext.functional import conv2d as CF

HAS_BF16_DOT = torch.ops.cnnext._cpu_bf16_isa() == "avx512bf16"
# CNNEXT_ISA values that force each path (narrowed to the CPU: "avx512bf16" runs the pair dot
# products only where the CPU has them).
PATHS = ["avx512bf16", "avx512", "portable"]
HALF_ULP = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def _bound(x, w, b, dtype, **kwargs):
    """Exact result (float64 on the rounded inputs) and the error bound stated above."""
    x64, w64 = x.double(), w.double()
    exact = F.conv2d(x64, w64, None if b is None else b.double(), **kwargs)
    magnitude = F.conv2d(x64.abs(), w64.abs(), None if b is None else b.double().abs(), **kwargs)
    k = w.shape[1] * w.shape[2] * w.shape[3]
    return exact, HALF_ULP[dtype] * exact.abs() + (k + 2) * 2.0**-24 * magnitude


def _check(out, x, w, b, dtype, **kwargs):
    exact, bound = _bound(x, w, b, dtype, **kwargs)
    assert out.dtype == dtype and out.shape == exact.shape
    err = (out.double() - exact).abs()
    assert bool((err <= bound).all()), f"max excess {(err - bound).max().item():.3g}"


def _force(monkeypatch, path):
    monkeypatch.setenv("CNNEXT_ISA", path)
    return path == "avx512bf16" and HAS_BF16_DOT


def test_bf16_isa_reports_the_path(monkeypatch):
    monkeypatch.setenv("CNNEXT_ISA", "avx512")
    assert cnnext.backends.cpu.bf16_isa() == "float32"
    monkeypatch.setenv("CNNEXT_ISA", "avx512bf16")
    assert cnnext.backends.cpu.bf16_isa() == ("avx512bf16" if HAS_BF16_DOT else "float32")
    monkeypatch.setenv("CNNEXT_ISA", "amx")  # never above the CPU: no AMX kernels here
    assert cnnext.backends.cpu.bf16_isa() == ("avx512bf16" if HAS_BF16_DOT else "float32")


# A covering grid: channel counts around the 2-element pairs and 32-column panels, odd
# kernels, strides 1-3, dilation, groups, padding, batch 0 and 1.
GRID = [
    # (batch, c_in, hw, c_out, kernel, stride, padding, dilation, groups)
    (1, 1, (5, 6), 8, (3, 3), 1, 1, 1, 1),
    (2, 3, (9, 9), 8, (7, 7), 2, 3, 1, 1),
    (1, 31, (6, 7), 33, (3, 3), 1, 1, 1, 1),
    (2, 32, (5, 5), 64, (1, 1), 1, 0, 1, 1),
    (1, 33, (7, 5), 17, (3, 1), 3, (1, 0), 1, 1),
    (2, 64, (6, 6), 40, (3, 3), 1, 2, 2, 1),
    (1, 64, (4, 4), 96, (1, 1), 2, 0, 1, 1),
    (2, 32, (9, 9), 48, (3, 3), 2, 1, 1, 4),
    (1, 24, (8, 8), 24, (5, 5), 1, 2, 1, 3),
    (2, 16, (7, 7), 16, (3, 3), 1, 1, 1, 4),
    (1, 12, (7, 7), 12, (3, 3), 1, 1, 1, 12),
    (2, 40, (9, 8), 40, (5, 5), 2, 2, 1, 40),
    (1, 17, (6, 6), 17, (3, 3), 1, 2, 2, 17),
    (1, 8, (5, 5), 16, (3, 3), 1, 1, 1, 8),
    # few channels per group: neighbouring groups merged into one block-diagonal product
    (1, 64, (6, 6), 64, (3, 3), 2, 1, 1, 16),
    (2, 104, (5, 5), 104, (3, 3), 1, 1, 1, 13),
    (1, 208, (5, 5), 208, (3, 3), 2, 1, 1, 26),
    (0, 8, (5, 5), 8, (3, 3), 1, 1, 1, 1),
    (1, 128, (3, 3), 512, (3, 3), 1, 1, 1, 1),
    (3, 31, (6, 6), 17, (1, 1), 1, 0, 1, 1),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", GRID, ids=lambda c: "x".join(map(str, c[:4])) + f"_k{c[4]}_g{c[8]}")
def test_forward_within_the_stated_bound(monkeypatch, path, dtype, case):
    _force(monkeypatch, path)
    n, c, (h, w_), o, k, s, p, d, g = case
    gen = torch.Generator().manual_seed(sum(map(hash, map(str, case))) % 2**31)
    x = torch.randn(n, c, h, w_, generator=gen).to(dtype)
    w = torch.randn(o, c // g, *k, generator=gen).to(dtype)
    b = torch.randn(o, generator=gen).to(dtype)
    kwargs = dict(stride=s, padding=p, dilation=d, groups=g)
    for layout, bias in itertools.product((torch.contiguous_format, torch.channels_last),
                                          (None, b)):
        xl = x.contiguous(memory_format=layout)
        out = CF(xl, w, bias, **kwargs)
        _check(out, x, w, bias, dtype, **kwargs)
        if out.numel():
            ref = F.conv2d(xl, w, bias, **kwargs)
            assert out.is_contiguous(memory_format=suggest_memory_format(ref))
            torch.testing.assert_close(out.float(), ref.float(), rtol=1.6e-2,
                                       atol=1.6e-2 * ref.float().abs().max().item())


GRAD_GRID = [
    # (input shape, weight shape, conv arguments)
    ((2, 6, 9, 8), (8, 3, 3, 3), dict(stride=(2, 1), padding=1, groups=2)),
    ((2, 16, 9, 8), (24, 8, 3, 3), dict(stride=2, padding=1, groups=2)),
    ((1, 32, 7, 7), (48, 32, 1, 1), dict()),
    ((1, 33, 10, 9), (17, 33, 2, 2), dict(stride=3)),  # pixels no tap reaches
    ((2, 40, 6, 6), (34, 40, 3, 3), dict(padding=2, dilation=2)),
    ((1, 8, 11, 11), (16, 8, 5, 3), dict(stride=(2, 3), padding=(2, 1))),
    ((2, 64, 7, 7), (64, 4, 3, 3), dict(padding=1, groups=16)),
    ((1, 208, 6, 6), (208, 8, 3, 3), dict(stride=2, padding=1, groups=26)),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", GRAD_GRID, ids=lambda c: "x".join(map(str, c[1])))
def test_gradients_within_the_stated_bound(monkeypatch, path, dtype, case):
    _force(monkeypatch, path)
    x_shape, w_shape, kwargs = case
    gen = torch.Generator().manual_seed(5)
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(*x_shape, generator=gen).to(dtype).contiguous(memory_format=layout)
        w = torch.randn(*w_shape, generator=gen).to(dtype)
        b = torch.randn(w_shape[0], generator=gen).to(dtype)
        out_shape = F.conv2d(x.float(), w.float(), **kwargs).shape
        go = torch.randn(*out_shape, generator=gen).to(dtype)
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        grads = torch.autograd.grad(CF(*leaves, **kwargs), leaves, go)
        exact = [t.double().requires_grad_() for t in (x, w, b)]
        exact_grads = torch.autograd.grad(F.conv2d(*exact, **kwargs), exact, go.double())
        # Each gradient is a sum of exact products of rounded values, accumulated in float32
        # and rounded once: half an ulp, plus float32 sums of at most a few thousand terms
        # (below 1e-4 of the largest gradient here).
        for gr, ex, leaf in zip(grads, exact_grads, (x, w, b)):
            assert gr.dtype == dtype
            if leaf is x:
                assert gr.is_contiguous(memory_format=suggest_memory_format(x))
            err = (gr.double() - ex).abs()
            bound = HALF_ULP[dtype] * ex.abs() + 1e-4 * ex.abs().max()
            assert bool((err <= bound).all()), f"max excess {(err - bound).max().item():.3g}"


@pytest.mark.parametrize("path", PATHS)
def test_nan_and_inf_propagate(monkeypatch, path):
    _force(monkeypatch, path)
    x = torch.randn(1, 32, 6, 6).bfloat16().contiguous(memory_format=torch.channels_last)
    w = torch.randn(16, 32, 3, 3).bfloat16()
    x[0, 3, 1, 1] = float("nan")
    x[0, 5, 4, 4] = float("inf")
    out = CF(x, w, padding=1).float()
    ref = F.conv2d(x.float(), w.float(), padding=1)
    assert torch.equal(out.isnan(), ref.isnan())
    assert torch.equal(out.isinf(), ref.isinf())
    assert out.isnan().any() and (out.isinf() | out.isnan())[0, :, 3:6, 3:6].all()


@pytest.mark.parametrize("shape", [(2, 64, 14, 14, 96, 3), (1, 256, 7, 7, 512, 1)])
def test_bit_identical_for_every_thread_count(shape):
    n, c, hw, _, o, k = shape
    x = torch.randn(n, c, hw, hw).bfloat16().contiguous(memory_format=torch.channels_last)
    w = torch.randn(o, c, k, k).bfloat16()
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(CF(x, w, padding=k // 2))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(results[0], r) for r in results[1:])


def test_gradients_bit_identical_for_every_thread_count():
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(2, 48, 13, 11, generator=gen).bfloat16()
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(40, 24, 3, 3, generator=gen).bfloat16()
    go = torch.randn(2, 40, 7, 6, generator=gen).bfloat16()
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(torch.ops.cnnext.conv2d_backward(
                go, x, w, [2, 2], [1, 1], [1, 1], 2, [True, True, True]))
    finally:
        torch.set_num_threads(before)
    for r in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], r))


@pytest.mark.skipif(not HAS_BF16_DOT, reason="needs AVX512-BF16")
def test_packed_weights_are_cached_and_refreshed(monkeypatch):
    monkeypatch.setenv("CNNEXT_ISA", "avx512bf16")
    cnnext.backends.cpu.weight_cache_clear()
    x = torch.randn(2, 32, 6, 6).bfloat16().contiguous(memory_format=torch.channels_last)
    w = torch.randn(40, 32, 3, 3).bfloat16()
    with torch.no_grad():
        first = CF(x, w, padding=1)
        again = CF(x, w, padding=1)
        stats = cnnext.backends.cpu.weight_cache_stats()
        assert stats["hits"] >= 1 and torch.equal(first, again)
        w.mul_(-1)  # an in-place update must not serve the stale packing
        assert torch.equal(CF(x, w, padding=1), -first)


def test_fused_relu_in_bfloat16():
    x = torch.randn(1, 16, 5, 5).bfloat16().contiguous(memory_format=torch.channels_last)
    w = torch.randn(24, 16, 3, 3).bfloat16()
    out = CF(x, w, padding=1, _relu=True)
    assert torch.equal(out, torch.relu(CF(x, w, padding=1)))

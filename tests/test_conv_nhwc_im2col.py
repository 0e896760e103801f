"""The im2col_nhwc row (csrc/cpu/conv_algo_im2col_nhwc.cpp): every conv geometry on
channels_last activations as NHWC columns times our GEMM, forced with CNNEXT_CONV_ALGO=im2col.
Forward, grad_input and grad_weight against torch; results channels_last; chunking down to one
pixel per chunk; every ISA; bit-identical forward/grad_input across thread counts."""
import pytest
import torch
import torch.nn.functional as F

import cnnext
from conftest import assert_close

CL = torch.channels_last

# (n, c, h, w, out_c, kernel, stride, padding, dilation, groups, bias)
GRID = [
    (2, 4, 7, 9, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),      # 3x3 same
    (2, 4, 7, 9, 6, (3, 3), (2, 2), (1, 1), (1, 1), 1, False),     # strided
    (1, 5, 11, 10, 7, (3, 3), (3, 3), (0, 2), (1, 1), 1, True),    # stride 3, asymmetric pad
    (2, 4, 11, 9, 6, (3, 2), (2, 3), (2, 1), (2, 1), 2, False),    # everything asymmetric
    (1, 8, 10, 10, 8, (3, 3), (3, 3), (3, 0), (3, 2), 4, True),    # dilation 3, groups 4
    (3, 6, 5, 6, 6, (1, 1), (1, 1), (0, 0), (1, 1), 1, True),      # pointwise (in place)
    (3, 6, 5, 6, 6, (1, 1), (1, 1), (0, 0), (1, 1), 2, False),     # pointwise, grouped
    (3, 6, 5, 7, 9, (1, 1), (2, 2), (0, 0), (1, 1), 3, True),      # 1x1 stride 2: tapless phases
    (2, 3, 6, 6, 4, (1, 1), (1, 1), (1, 2), (1, 1), 1, True),      # 1x1 padded
    (2, 6, 9, 9, 12, (3, 3), (1, 1), (1, 1), (1, 1), 6, True),     # depthwise, multiplier 2
    (2, 5, 9, 8, 5, (3, 3), (2, 2), (1, 1), (1, 1), 5, False),     # depthwise strided
    (2, 3, 8, 8, 5, (5, 5), (2, 1), (2, 3), (1, 1), 1, True),      # 5x5
    (2, 8, 13, 11, 8, (5, 5), (1, 1), (2, 2), (2, 2), 2, True),    # 5x5 dilated, grouped
    (1, 4, 17, 17, 4, (1, 7), (1, 1), (0, 3), (1, 1), 1, False),   # Inception 1x7
    (1, 4, 17, 17, 4, (7, 1), (1, 1), (3, 0), (1, 1), 1, True),    # Inception 7x1
    (2, 4, 9, 8, 6, (3, 1), (1, 2), (1, 0), (1, 1), 2, True),      # 3x1 strided along w
    (1, 3, 23, 21, 8, (7, 7), (2, 2), (3, 3), (1, 1), 1, True),    # stem
    (2, 4, 7, 7, 4, (3, 3), (1, 1), (0, 0), (3, 3), 1, True),      # kernel extent = map
    (2, 4, 5, 5, 3, (2, 2), (3, 3), (0, 0), (1, 1), 1, True),      # stride > kernel
    (1, 4, 4, 4, 4, (3, 3), (1, 1), (3, 3), (1, 1), 1, False),     # padding 3: all-zero rows
    (2, 2, 5, 5, 2, (4, 4), (2, 2), (1, 1), (1, 1), 1, True),      # even kernel
    (1, 16, 3, 3, 32, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),    # wide channels, tiny map
    (1, 38, 5, 6, 42, (3, 2), (1, 1), (1, 0), (1, 1), 2, True),    # weight transpose tile edges
]


def _id(s):
    return "x".join(map(str, s[:5])) + f"k{s[5][0]}{s[5][1]}s{s[6][0]}{s[6][1]}" \
        f"p{s[7][0]}{s[7][1]}d{s[8][0]}{s[8][1]}g{s[9]}" + ("b" if s[10] else "")


@pytest.fixture
def im2col_env(monkeypatch):
    """Forces the row; returns a setter for the other variables (ISA, workspace bytes)."""
    for k in ("CNNEXT_ISA", "CNNEXT_CONV_WORKSPACE_BYTES"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("CNNEXT_CONV_ALGO", "im2col")

    def set_env(name, value):
        monkeypatch.setenv(name, value)
    return set_env


def _tensors(shape, dtype, seed=0):
    n, c, h, w, co, k, s, p, d, g, bias = shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen, dtype=dtype).contiguous(memory_format=CL)
    wt = torch.randn(co, c // g, *k, generator=gen, dtype=dtype)
    b = torch.randn(co, generator=gen, dtype=dtype) if bias else None
    return x, wt, b, (list(s), list(p), list(d), g)


def _passes(x, wt, b, args, seed=1):
    """cnnext's forward, grad_input and grad_weight through the operators, and torch's."""
    y = torch.ops.cnnext.conv2d(x, wt, b, *args)
    gen = torch.Generator().manual_seed(seed)
    go = torch.randn(y.shape, generator=gen, dtype=x.dtype).contiguous(memory_format=CL)
    gi, gw, _ = torch.ops.cnnext.conv2d_backward(go, x, wt, *args, [True, True, False])
    xr, wr = x.detach().clone().requires_grad_(), wt.detach().clone().requires_grad_()
    yr = F.conv2d(xr, wr, b, *args)
    gir, gwr = torch.autograd.grad(yr, (xr, wr), go)
    return (y, gi, gw), (yr.detach(), gir, gwr)


def _check(shape, dtype):
    x, wt, b, args = _tensors(shape, dtype)
    ours, ref = _passes(x, wt, b, args)
    for name, a, e in zip(("forward", "grad_input", "grad_weight"), ours, ref):
        assert a.shape == e.shape, name
        assert_close(a, e, dtype)
    assert ours[0].is_contiguous(memory_format=CL)
    assert ours[1].is_contiguous(memory_format=CL)
    return ours


def _problem(shape):
    n, c, h, w, co, k, s, p, d, g, _ = shape
    return (n, c, h, w), (co, c // g, *k), s, p, d, g


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", GRID, ids=_id)
def test_grid_matches_torch(im2col_env, shape, dtype):
    for ps in ("forward", "grad_input", "grad_weight"):
        assert cnnext.backends.cpu.choice(*_problem(shape), dtype=dtype, pass_=ps,
                                          channels_last=True) == "im2col_nhwc"
    _check(shape, dtype)


def test_applies_to_every_channels_last_problem_only():
    for shape in GRID:
        for ps in ("forward", "grad_input", "grad_weight"):
            assert "im2col_nhwc" in cnnext.backends.cpu.algorithms(
                *_problem(shape), pass_=ps, channels_last=True)
            assert "im2col_nhwc" not in cnnext.backends.cpu.algorithms(*_problem(shape), pass_=ps)


@pytest.mark.parametrize("isa", ["avx512", "avx2", "portable"])
def test_every_isa(im2col_env, isa):
    im2col_env("CNNEXT_ISA", isa)  # narrowed to what the machine supports
    for shape in (GRID[3], GRID[5], GRID[9], GRID[11]):
        for dtype in (torch.float64, torch.float32):
            _check(shape, dtype)


@pytest.mark.parametrize("budget", ["1", "200", "4096"])
def test_tiny_workspace_forces_chunking(im2col_env, budget):
    # "1": one pixel per chunk (a column row never fits); the rest cut rows mid-image.
    im2col_env("CNNEXT_CONV_WORKSPACE_BYTES", budget)
    for shape in (GRID[1], GRID[3], GRID[5], GRID[7], GRID[12]):
        _check(shape, torch.float64)


def test_batch_zero_and_one(im2col_env):
    for n in (0, 1):
        shape = (n, 4, 7, 6, 6, (3, 3), (2, 1), (1, 2), (1, 2), 2, True)
        x, wt, b, args = _tensors(shape, torch.float64)
        ours, ref = _passes(x, wt, b, args)
        for a, e in zip(ours, ref):
            assert_close(a, e)
        if n > 0:  # an empty batch's layout is conv2d.cpp's rule, not this row's
            assert ours[0].is_contiguous(memory_format=CL)
            assert ours[1].is_contiguous(memory_format=CL)


def test_non_contiguous_channels_last_views(im2col_env):
    base = torch.randn(3, 12, 13, 12, dtype=torch.float64).contiguous(memory_format=CL)
    views = [base[:, 2:8], base[:, :, 1:12:2, ::3], base[1:], base[:, ::2]]
    for x in views:
        c = x.shape[1]
        wt = torch.randn(6, c // 2, 3, 2, dtype=torch.float64)
        b = torch.randn(6, dtype=torch.float64)
        args = ([2, 1], [1, 0], [1, 2], 2)
        ours, ref = _passes(x, wt, b, args)
        for a, e in zip(ours, ref):
            assert_close(a, e)
        assert ours[0].is_contiguous(memory_format=CL)


def test_functional_and_autograd(im2col_env):
    for dtype in (torch.float64, torch.float32):
        x, wt, b, (s, p, d, g) = _tensors(GRID[4], dtype)
        b = torch.randn(wt.shape[0], dtype=dtype)
        leaves = [t.clone().requires_grad_() for t in (x, wt, b)]
        y = cnnext.functional.conv2d(*leaves, s, p, d, g)
        refs = [t.clone().requires_grad_() for t in (x, wt, b)]
        yr = F.conv2d(*refs, s, p, d, g)
        assert y.is_contiguous(memory_format=CL)
        assert_close(y, yr)
        go = torch.randn_like(yr)
        y.backward(go)
        yr.backward(go)
        for a, e in zip(leaves, refs):
            assert_close(a.grad, e.grad)
        assert leaves[0].grad.is_contiguous(memory_format=CL)


@pytest.mark.parametrize("shape", [GRID[0], GRID[4], GRID[9], GRID[16]], ids=_id)
def test_bit_identical_thread_counts(im2col_env, shape):
    x, wt, b, args = _tensors(shape, torch.float32)
    # A big enough batch that two threads take the parallel-chunk path.
    x = torch.cat([x] * 16).contiguous(memory_format=CL)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 2):
            torch.set_num_threads(threads)
            results.append(_passes(x, wt, b, args)[0])
    finally:
        torch.set_num_threads(before)
    for i in (0, 1):  # forward and grad_input: bit-identical
        assert torch.equal(results[0][i], results[1][i])
    for i in (0, 1, 2):  # every pass repeats bit for bit at one thread count
        assert torch.equal(results[1][i], results[2][i])
    assert_close(results[0][2], results[1][2])


def test_gradcheck_and_gradgradcheck(im2col_env):
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64).contiguous(memory_format=CL)
    wt = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    inputs = tuple(t.requires_grad_() for t in (x, wt, b))

    def fn(x, w, b):
        return cnnext.functional.conv2d(x, w, b, 2, 1, 2, 2)
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)

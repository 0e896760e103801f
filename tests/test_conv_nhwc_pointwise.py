"""The pointwise_nhwc row (csrc/cpu/conv_algo_pointwise_nhwc.cpp): 1x1 convolutions on
channels_last tensors as they lie, against torch. Forward, grad_input and grad_weight through the
operators and through cnnext.functional + autograd, in float64 and float32, over strides (with
odd sizes), groups, bias, batch 0 and 1, 1x1 maps and channels_last views; every ISA forced;
the column workspace shrunk to force chunked gathers; 1 vs 2 threads; gradcheck and
gradgradcheck."""
import pytest
import torch
import torch.nn.functional as F

import cnnext
from conftest import assert_close
from test_depthwise import _grads

CL = torch.channels_last

# (batch, in_channels, H, W, out_channels, stride, groups)
SHAPES = [
    (2, 8, 7, 9, 6, 1, 1),
    (2, 8, 7, 9, 6, 2, 2),            # stride 2, odd sizes: the last row and column are read
    (1, 12, 10, 11, 8, 3, 4),         # stride 3: rows and columns past the grid
    (3, 6, 9, 8, 10, (2, 1), 1),      # unequal strides
    (2, 10, 5, 7, 4, (1, 3), 2),
    (1, 5, 6, 6, 7, 1, 1),            # batch 1
    (3, 4, 1, 1, 5, 1, 1),            # 1x1 map
    (2, 4, 1, 1, 6, 2, 2),            # 1x1 map, strided: no gather needed
    (2, 6, 1, 5, 4, 2, 1),            # one row: only the columns are strided
    (4, 64, 16, 16, 64, 1, 1),        # enough pixels for one grad_weight range per thread
    (2, 48, 15, 13, 32, 2, 4),        # the same, gathered
    (4, 32, 16, 16, 128, 1, 2),       # the same, expanding: sums formed transposed
    (2, 24, 23, 29, 20, 1, 1),        # 1334 pixels: 256-pixel tasks, evened to 6 of 223
    (2, 40, 15, 17, 300, 1, 1),       # 300 output channels > a task's pixels: one GEMM
    (3, 272, 9, 9, 16, 1, 2),         # 136 input channels a group, 243 pixels: one GEMM
    (2, 80, 5, 6, 160, 1, 1),         # expanding, 80 input channels: summed untransposed
    (0, 4, 5, 5, 6, 1, 1),            # batch 0
    (0, 4, 5, 5, 6, 2, 2),
]


def _inputs(shape, dtype, bias=True, seed=0):
    n, c, h, w, o, s, g = shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, dtype=dtype, generator=gen).contiguous(memory_format=CL)
    wt = torch.randn(o, c // g, 1, 1, dtype=dtype, generator=gen)
    b = torch.randn(o, dtype=dtype, generator=gen) if bias else None
    cfg = (s, 0, 1, g)
    go = torch.randn(F.conv2d(x, wt, b, *cfg).shape, dtype=dtype, generator=gen)
    return x, wt, b, cfg, go.contiguous(memory_format=CL)


def _pair(v):
    return list(v) if isinstance(v, tuple) else [v, v]


def _check_functional(shape, dtype, bias=True, x=None):
    x0, w, b, cfg, go = _inputs(shape, dtype, bias)
    x = x0 if x is None else x
    ours = _grads(cnnext.functional.conv2d, x, w, b, cfg, go)
    ref = _grads(F.conv2d, x, w, b, cfg, go)
    for name, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, ref):
        if e is None:
            assert a is None, name
            continue
        assert_close(a, e, dtype, msg=lambda m: f"{name} {shape} {dtype}: {m}")
        if name in ("output", "grad_input") and a.numel():
            # torch's layouts (a view's .grad follows autograd's layout rule, not the op's)
            assert a.is_contiguous(memory_format=CL) == e.is_contiguous(memory_format=CL), name
    return ours


def _check_ops(shape, dtype, bias=True):
    x, w, b, cfg, go = _inputs(shape, dtype, bias)
    s, _, _, g = cfg
    args = (_pair(s), [0, 0], [1, 1], g)
    y = torch.ops.cnnext.conv2d(x, w, b, *args, False)
    assert_close(y, F.conv2d(x, w, b, *cfg), dtype)
    if y.numel():
        assert y.is_contiguous(memory_format=CL)
    gi, gw, gb = torch.ops.cnnext.conv2d_backward(go, x, w, *args, [True, True, True])
    ref = torch.ops.aten.convolution_backward(go, x, w, [w.shape[0]], _pair(s), [0, 0], [1, 1],
                                              False, [0, 0], g, [True, True, True])
    for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), (gi, gw, gb), ref):
        assert_close(a, e, dtype, msg=lambda m: f"{name} {shape} {dtype}: {m}")
    if gi.numel():
        assert gi.is_contiguous(memory_format=CL)
    # Each pass alone (masks) gives the same bits as all three together.
    alone = [torch.ops.cnnext.conv2d_backward(go, x, w, *args, mask)[i]
             for i, mask in enumerate(([True, False, False], [False, True, False]))]
    assert torch.equal(alone[0], gi) and torch.equal(alone[1], gw)


def _problem(shape, dtype=torch.float32):
    n, c, h, w, o, s, g = shape
    return dict(input_size=(n, c, h, w), weight_size=(o, c // g, 1, 1), stride=s, groups=g,
                dtype=dtype, channels_last=True)


@pytest.fixture
def env(monkeypatch):
    for k in ("CNNEXT_CONV_ALGO", "CNNEXT_ISA", "CNNEXT_CONV_WORKSPACE_BYTES"):
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_shape_against_torch(env, dtype):
    for shape in SHAPES:
        if shape[2] * shape[3] > 1:  # 1x1 maps may go to the matmul row instead
            for p in ("forward", "grad_input", "grad_weight"):
                # Which NHWC row wins on these small shapes is the fitted rule's call.
                assert cnnext.backends.cpu.choice(**_problem(shape, dtype), pass_=p) in \
                    ("pointwise_nhwc", "im2col_nhwc"), (shape, p)
        _check_ops(shape, dtype, bias=True)
        _check_ops(shape, dtype, bias=False)
        _check_functional(shape, dtype, bias=shape[0] != 1)


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_forced_row_every_isa(env, isa):
    env.setenv("CNNEXT_ISA", isa)
    env.setenv("CNNEXT_CONV_ALGO", "pointwise")
    for shape in SHAPES:
        assert cnnext.backends.cpu.choice(**_problem(shape)) == "pointwise_nhwc"
        _check_ops(shape, torch.float64)
        _check_functional(shape, torch.float32)


def test_tiny_workspace_chunks_the_gathers(env):
    # A budget of a few pixels' rows: forward, grad_input and grad_weight of strided layers run
    # many chunks (one pixel per chunk at the smallest); stride 1 needs no workspace.
    before = [_check_functional(shape, torch.float64) for shape in SHAPES]
    for budget in ("1", "200"):
        env.setenv("CNNEXT_CONV_WORKSPACE_BYTES", budget)
        for shape, ref in zip(SHAPES, before):
            ours = _check_functional(shape, torch.float64)
            # The forward and grad_input GEMMs chain each element the same way in every chunk.
            assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1]), shape


def test_channels_last_views(env):
    # A slice of a larger channels_last tensor (channels, width and batch sliced): the row
    # receives a contiguous copy and must give torch's values.
    for dtype in (torch.float64, torch.float32):
        big = torch.randn(5, 24, 13, 17, dtype=dtype).contiguous(memory_format=CL)
        for view, shape in (
            (big[:, 4:12, :9, 3:14], (5, 8, 9, 11, 6, 1, 1)),
            (big[1:4, :16, :, ::2], (3, 16, 13, 9, 8, 2, 2)),
            (big[::2, 3:15, 2:, :], (3, 12, 11, 17, 12, (3, 2), 4)),
        ):
            assert view.shape == shape[:4] and not view.is_contiguous(memory_format=CL)
            _check_functional(shape, dtype, x=view)


@pytest.mark.parametrize("shape", [(4, 64, 16, 16, 64, 1, 1), (3, 40, 15, 13, 24, 2, 2),
                                   (4, 32, 16, 16, 128, 1, 2),
                                   (2, 16, 9, 9, 16, 1, 4), (2, 24, 23, 29, 20, 1, 1),
                                   (2, 40, 15, 17, 300, 1, 1)])
def test_thread_counts(env, shape):
    # Forward and grad_input are the same bits for 1 and 2 threads (the GEMM's promise, and
    # gathers are copies); grad_weight is the same bits on a repeat with the same thread count.
    before = torch.get_num_threads()
    runs = {}
    try:
        for threads in (2, 2, 1):
            torch.set_num_threads(threads)
            runs.setdefault(threads, []).append(_check_functional(shape, torch.float32))
    finally:
        torch.set_num_threads(before)
    (a, b), (c,) = runs[2], runs[1]
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])


@pytest.mark.parametrize("shape", [(2, 4, 5, 4, 3, 1, 1), (1, 4, 5, 7, 6, 2, 2)])
def test_gradcheck_and_gradgradcheck_float64(env, shape):
    x, w, b, cfg, _ = _inputs(shape, torch.float64)
    x.requires_grad_(), w.requires_grad_(), b.requires_grad_()
    fn = lambda x, w, b: cnnext.functional.conv2d(x, w, b, *cfg)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


NHWC_GEMM_ROWS = ("pointwise_nhwc", "im2col_nhwc")


def test_rule_picks_the_row_for_channels_last_1x1(env):
    problem = dict(input_size=(8, 256, 56, 56), weight_size=(64, 256, 1, 1))
    for p in ("forward", "grad_input", "grad_weight"):
        assert "pointwise_nhwc" in cnnext.backends.cpu.algorithms(**problem, pass_=p,
                                                                  channels_last=True)
        # On a 1x1 layer both NHWC GEMM rows run the same product (measured within 10% of
        # each other on the census): the fitted rule picks either, never an NCHW row.
        for stride in (1, 2):
            assert cnnext.backends.cpu.choice(**problem, stride=stride, pass_=p,
                                              channels_last=True) in NHWC_GEMM_ROWS
        # Not for NCHW problems, padded or larger kernels.
        assert "pointwise_nhwc" not in cnnext.backends.cpu.algorithms(**problem, pass_=p)
        assert "pointwise_nhwc" not in cnnext.backends.cpu.algorithms(
            **problem, padding=1, pass_=p, channels_last=True)
        assert "pointwise_nhwc" not in cnnext.backends.cpu.algorithms(
            (8, 256, 56, 56), (64, 256, 3, 3), pass_=p, channels_last=True)

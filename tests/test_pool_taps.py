"""max_pool2d's window taps: what the CPU autograd of max_pool2d_values saves in channels_last
instead of int64 indices (csrc/autograd_pool.cpp), and the two operators behind it.

- max_pool2d_taps gives max_pool2d's values and, per output, the tap of the element that
  max_pool2d's index names (cnnext._taps converts between them), 255 for an empty window;
- max_pool2d_taps_backward equals max_pool2d_backward bit for bit on every ISA, dtype and
  layout: ties, NaN and -inf windows, ceil mode, padding, dilation, empty windows, batch 0;
- a tap that names no element of its non-empty window raises (nothing is written out of bounds);
- through cnnext.functional the gradients equal torch's, and the graph saves uint8 taps in
  channels_last, int64 indices in NCHW and for windows over 255 elements;
- opcheck, gradcheck / gradgradcheck, and the export decompositions of both operators."""
import pytest
import torch
import torch.nn.functional as F

import cnnext.functional as CF
from cnnext._taps import TAP_EMPTY, indices_to_taps, taps_to_indices
from cnnext.export import decompositions

ops = torch.ops.cnnext
ISAS = ["portable", "avx2", "avx512"]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# kernel, stride, padding, dilation, ceil_mode
WINDOWS = [
    ([3, 3], [2, 2], [1, 1], [1, 1], False),
    ([2, 2], [2, 2], [0, 0], [1, 1], False),
    ([3, 3], [2, 2], [0, 0], [1, 1], True),
    ([3, 3], [1, 1], [1, 1], [1, 1], False),
    ([2, 3], [1, 2], [1, 1], [2, 1], False),
    ([5, 5], [3, 3], [2, 2], [1, 1], True),
    ([1, 7], [1, 1], [0, 3], [1, 1], False),
]
# At 16 / 8 / 4 float lanes, C = 21 and 37 end with an overlapping block, 64 is whole blocks of 4.
CHANNELS = [1, 3, 21, 37, 64]


def _input(dtype, channels, channels_last, hw=(11, 13), seed=0):
    """Small integers (many ties: the first maximum must win) with NaN and -inf sprinkled in,
    and one image holding a block of -inf only."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-6, 6, (2, channels, *hw), generator=gen).to(torch.float64)
    pick = torch.rand(x.shape, generator=gen)
    x[pick < 0.02] = float("nan")
    x[(pick >= 0.02) & (pick < 0.06)] = float("-inf")
    x[1, :, 2:6, 3:8] = float("-inf")
    x = x.to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _same(a, b):
    """Equal, NaN where NaN."""
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0), b.nan_to_num(0))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_taps_name_the_indices_element_and_backward_matches(monkeypatch, isa, channels_last, dtype):
    monkeypatch.setenv("CNNEXT_ISA", isa)
    for window in WINDOWS:
        for channels in CHANNELS:
            x = _input(dtype, channels, channels_last)
            out, indices = ops.max_pool2d(x, *window)
            values, taps = ops.max_pool2d_taps(x, *window)
            assert taps.dtype == torch.uint8 and taps.stride() == indices.stride()
            assert _same(values, out), (window, channels)
            flat, nonempty = taps_to_indices(taps, x.shape[2:], *window[:4])
            assert torch.equal(flat, torch.where(nonempty, indices, 0)), (window, channels)
            assert torch.equal(taps, indices_to_taps(indices, x.shape[2:], *window[:4]))
            grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
            grad_out = grad_out.to(dtype).contiguous(memory_format=torch.channels_last
                                                     if channels_last else torch.contiguous_format)
            expected = ops.max_pool2d_backward(grad_out, x, indices, *window)
            got = ops.max_pool2d_taps_backward(grad_out, x, taps, *window)
            assert torch.equal(got, expected), (window, channels)
            assert got.stride() == expected.stride()


@pytest.mark.parametrize("channels_last", [False, True])
def test_empty_windows_get_the_empty_tap_and_no_gradient(channels_last):
    # Dilation 2 with padding 1 over a 1-pixel-high map in ceil mode: the window's two rows are
    # -1 and 1, neither inside the map (torch returns -inf with an index outside the plane).
    x = torch.randn(2, 20, 1, 6, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    window = ([2, 1], [1, 1], [1, 0], [2, 1], True)
    out, taps = ops.max_pool2d_taps(x, *window)
    assert torch.isneginf(out).all() and (taps == TAP_EMPTY).all()
    grad_out = torch.randn_like(out)
    grad = ops.max_pool2d_taps_backward(grad_out, x, taps, *window)
    assert torch.equal(grad, torch.zeros_like(x))
    _, indices = ops.max_pool2d(x, *window)
    assert torch.equal(grad, ops.max_pool2d_backward(grad_out, x, indices, *window))


@pytest.mark.parametrize("channels_last", [False, True])
def test_taps_off_their_window_raise(channels_last):
    x = torch.randn(1, 20, 6, 6)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    window = ([3, 3], [2, 2], [1, 1], [1, 1], False)
    out, taps = ops.max_pool2d_taps(x, *window)
    grad_out = torch.ones_like(out)
    for bad in (9, 200, TAP_EMPTY):  # past the 3x3 area; the empty mark in a non-empty window
        t = taps.clone()
        t[0, 3, 1, 1] = bad
        with pytest.raises(RuntimeError, match="taps hold values outside their windows"):
            ops.max_pool2d_taps_backward(grad_out, x, t, *window)
    # Output (0, 0)'s window is clipped by the padding to 2x2: tap 0 is its first element,
    # tap 2 (row 0, column 2) lies outside the clipped window.
    t = taps.clone()
    t[0, 3, 0, 0] = 2
    with pytest.raises(RuntimeError, match="taps hold values outside their windows"):
        ops.max_pool2d_taps_backward(grad_out, x, t, *window)


def test_taps_argument_checks():
    x = torch.randn(1, 2, 6, 6)
    window = ([3, 3], [2, 2], [1, 1], [1, 1], False)
    out, taps = ops.max_pool2d_taps(x, *window)
    with pytest.raises(RuntimeError, match="expected taps of dtype Byte"):
        ops.max_pool2d_taps_backward(out, x, taps.long(), *window)
    with pytest.raises(RuntimeError, match="taps"):
        ops.max_pool2d_taps_backward(out, x, taps[:, :1], *window)
    with pytest.raises(RuntimeError, match="more taps than uint8 holds"):
        ops.max_pool2d_taps(torch.randn(1, 1, 20, 20), [16, 16], [1, 1], [0, 0], [1, 1], False)


def _saved_dtypes(fn, x):
    saved = []

    def pack(t):
        saved.append(t.dtype)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn(x)
    return y, saved


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_functional_gradient_matches_torch(dtype, channels_last):
    for window in WINDOWS:
        kernel, stride, padding, dilation, ceil_mode = window
        x = _input(dtype, 21, channels_last).nan_to_num(nan=0.5)
        xc = x.clone().requires_grad_()
        xt = x.clone().requires_grad_()
        y, saved = _saved_dtypes(lambda t: CF.max_pool2d(t, kernel, stride, padding, dilation,
                                                         ceil_mode), xc)
        yt = F.max_pool2d(xt, kernel, stride, padding, dilation, ceil_mode)
        assert torch.equal(y, yt)
        assert (torch.uint8 if channels_last else torch.int64) in saved
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
        (gc,) = torch.autograd.grad(y, xc, g)
        (gt,) = torch.autograd.grad(yt, xt, g)
        if dtype in (torch.float32, torch.float64):
            assert torch.equal(gc, gt), window
        else:  # torch adds half-precision gradients in the output's order, rounding each time
            assert torch.allclose(gc.float(), gt.float(), atol=0.05, rtol=0.02), window


def test_large_windows_keep_int64_indices():
    x = torch.randn(1, 3, 20, 20, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    y, saved = _saved_dtypes(lambda t: CF.max_pool2d(t, 16, 4), x)
    assert torch.int64 in saved and torch.uint8 not in saved
    (g,) = torch.autograd.grad(y, x, torch.ones_like(y))
    xt = x.detach().clone().requires_grad_()
    (gt,) = torch.autograd.grad(F.max_pool2d(xt, 16, 4), xt, torch.ones_like(y))
    assert torch.equal(g, gt)


def test_batch_zero_and_views():
    window = ([3, 3], [2, 2], [1, 1], [1, 1], False)
    x = torch.randn(0, 4, 7, 7).contiguous(memory_format=torch.channels_last)
    out, taps = ops.max_pool2d_taps(x, *window)
    assert out.shape == taps.shape == (0, 4, 4, 4)
    assert ops.max_pool2d_taps_backward(out, x, taps, *window).shape == x.shape
    base = torch.randn(2, 40, 9, 11).contiguous(memory_format=torch.channels_last)
    view = base[:, 3:30, 1:, ::2]  # no layout's strides
    out, indices = ops.max_pool2d(view, *window)
    values, taps = ops.max_pool2d_taps(view, *window)
    assert torch.equal(out, values)
    g = torch.randn_like(out)
    assert torch.equal(ops.max_pool2d_taps_backward(g, view, taps, *window),
                       ops.max_pool2d_backward(g, view, indices, *window))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("window", WINDOWS[:5])
def test_opcheck(channels_last, window):
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(ops.max_pool2d_taps, (x.requires_grad_(),) + window)
    out, taps = ops.max_pool2d_taps(x.detach(), *window)
    g = torch.randn_like(out).requires_grad_()
    torch.library.opcheck(ops.max_pool2d_taps_backward, (g, x.detach(), taps) + window)


@pytest.mark.parametrize("window", WINDOWS[:5])
def test_gradcheck_and_gradgradcheck(window):
    # Distinct values: the maximum of every window is unique, so the function is smooth there.
    x = (torch.randperm(2 * 3 * 7 * 6, dtype=torch.float64) / 50).reshape(2, 3, 7, 6)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    kernel, stride, padding, dilation, ceil_mode = window

    def functional(t):
        return CF.max_pool2d(t, kernel, stride, padding, dilation, ceil_mode)

    def direct(t):
        return ops.max_pool2d_taps(t, *window)[0]

    for fn in (functional, direct):
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))


def test_export_decompositions_match():
    table = decompositions()
    window = ([3, 3], [2, 2], [1, 1], [2, 1], True)
    x = torch.randn(2, 5, 9, 8).contiguous(memory_format=torch.channels_last)
    values, taps = ops.max_pool2d_taps(x, *window)
    d_values, d_taps = table[ops.max_pool2d_taps.default](x, *window)
    assert torch.equal(values, d_values) and torch.equal(taps, d_taps)
    g = torch.randn_like(values)
    assert torch.equal(table[ops.max_pool2d_taps_backward.default](g, x, taps, *window),
                       ops.max_pool2d_taps_backward(g, x, taps, *window))


def _training_step(x):
    x = x.detach().requires_grad_()
    return torch.autograd.grad(CF.max_pool2d(x, 3, 2, 1).square().sum(), [x])[0]


def test_compiled_backward_saves_taps_and_matches_eager():
    # AOT autograd traces the C++ Function on fake tensors: max_pool2d_taps' fake kernel.
    def f(x):
        return CF.max_pool2d(x, 3, 2, 1).square().sum()

    torch._dynamo.reset()
    x = torch.randn(2, 20, 9, 9).contiguous(memory_format=torch.channels_last).requires_grad_()
    (expected,) = torch.autograd.grad(f(x), x)
    (got,) = torch.autograd.grad(torch.compile(f, fullgraph=True, backend="aot_eager")(x), x)
    assert torch.equal(got, expected)


def test_training_graph_lowers_to_aten():
    from torch.fx.experimental.proxy_tensor import make_fx

    x = torch.randn(2, 20, 9, 9, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    traced = make_fx(_training_step)(x)
    assert any(n.target == ops.max_pool2d_taps.default for n in traced.graph.nodes)
    lowered = make_fx(_training_step, decomposition_table=decompositions())(x)
    assert not any(getattr(n.target, "namespace", None) == "cnnext" for n in lowered.graph.nodes)
    assert torch.equal(lowered(x), _training_step(x))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_streaming_backward_matches_cached_backward(monkeypatch, isa, dtype):
    # CNNEXT_POOL_STREAM=1 forces the non-temporal grad_input stores (taken above the cache):
    # every channel count's aligned, unaligned and overlapping last blocks against the cached path.
    monkeypatch.setenv("CNNEXT_ISA", isa)
    for channels in (21, 37, 64, 100):
        x = _input(dtype, channels, True)
        window = WINDOWS[0]
        out, taps = ops.max_pool2d_taps(x, *window)
        grad_out = torch.randn(out.shape).to(dtype).contiguous(memory_format=torch.channels_last)
        monkeypatch.setenv("CNNEXT_POOL_STREAM", "0")
        cached = ops.max_pool2d_taps_backward(grad_out, x, taps, *window)
        monkeypatch.setenv("CNNEXT_POOL_STREAM", "1")
        streamed = ops.max_pool2d_taps_backward(grad_out, x, taps, *window)
        monkeypatch.delenv("CNNEXT_POOL_STREAM")
        assert torch.equal(streamed, cached), channels

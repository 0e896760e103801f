"""The CPU pooling backward's task split: each task owns a block of input rows of one image (all
channels), so with fewer images than threads an image's rows are shared out. Gradients must be
bit-identical whatever the thread count, match torch, and the global-pooling broadcast path
(window = the whole map) must give every pixel its channel's share."""
import pytest
import torch
import torch.nn.functional as F

import cnnext.functional as CF
from conftest import assert_close

CASES = [
    ("max 3x3 s2 p1", lambda m, t: m.max_pool2d(t, 3, 2, 1)),
    ("max 4x4 s1 p2 (heavy overlap)", lambda m, t: m.max_pool2d(t, 4, 1, 2)),
    ("max 3x3 s2 ceil", lambda m, t: m.max_pool2d(t, 3, 2, ceil_mode=True)),
    ("max dilated", lambda m, t: m.max_pool2d(t, (2, 3), (1, 2), (1, 1), dilation=(2, 1))),
    ("adaptive max", lambda m, t: m.adaptive_max_pool2d(t, (5, 3))),
    ("avg 3x3 s1 p1", lambda m, t: m.avg_pool2d(t, 3, 1, 1)),
    ("avg 2x2", lambda m, t: m.avg_pool2d(t, 2)),
    ("avg ceil no pad count", lambda m, t: m.avg_pool2d(t, 3, 2, 1, ceil_mode=True,
                                                        count_include_pad=False)),
    ("avg whole map", lambda m, t: m.avg_pool2d(t, (9, 13))),
    ("adaptive avg 1x1", lambda m, t: m.adaptive_avg_pool2d(t, 1)),
    ("adaptive avg 3x4", lambda m, t: m.adaptive_avg_pool2d(t, (3, 4))),
]


def _grad(fn, x, g_seed):
    x = x.detach().clone().requires_grad_()
    out = fn(x)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(g_seed)).to(x.dtype)
    g = g.contiguous(memory_format=torch.channels_last) if x.is_contiguous(
        memory_format=torch.channels_last) and x.shape[1] > 1 else g
    return torch.autograd.grad(out, x, g)[0]


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 3])
def test_row_blocks_are_thread_count_independent(restore_threads, channels_last, dtype, batch):
    # C = 21: a full vector of channels and a tail at every ISA width; 9 x 13 rows split unevenly.
    x = torch.randn(batch, 21, 9, 13, generator=torch.Generator().manual_seed(5)).round()
    x = x.to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for name, fn in CASES:
        results = []
        for threads in (1, 2, 3, 4):
            torch.set_num_threads(threads)
            results.append(_grad(lambda t: fn(CF, t), x, 11))
        for r in results[1:]:
            assert torch.equal(r, results[0]), (name, dtype, channels_last, batch)
        assert results[0].is_contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        assert_close(results[0], _grad(lambda t: fn(F, t), x, 11), dtype)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_global_pooling_gradient_is_the_share_everywhere(channels_last, dtype):
    x = torch.randn(2, 35, 7, 6).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    out = CF.adaptive_avg_pool2d(x, 1)
    g = torch.randn(out.shape).to(dtype)
    (grad,) = torch.autograd.grad(out, x, g)
    # Each pixel: its channel's share (divided by each extent in turn, as torch does).
    want = (g.float() / 7 / 6).to(dtype).expand(x.shape)
    assert torch.equal(grad, want)
    (ref,) = torch.autograd.grad(F.adaptive_avg_pool2d(x, 1), x, g)
    assert_close(grad, ref, dtype)


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_channels_last_max_backward_gather_equals_the_scatter(monkeypatch, isa, dtype):
    """channels_last max backward gathers, per input pixel, the outputs whose index is that
    pixel. With the forward's indices it must equal torch's scatter; with indices that leave
    their windows (a caller's own, still inside the plane) it must fall back to the scatter."""
    monkeypatch.setenv("CNNEXT_ISA", isa)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 37, 11, 10, generator=gen).round().to(dtype)  # ties
    x = x.contiguous(memory_format=torch.channels_last)
    for args in ([3, 3], [2, 2], [1, 1], [1, 1], False), ([3, 2], [1, 2], [1, 0], [2, 1], True):
        out, idx = torch.ops.cnnext.max_pool2d(x, *args)
        g = torch.randn(out.shape, generator=gen).to(dtype).contiguous(
            memory_format=torch.channels_last)
        ours = torch.ops.cnnext.max_pool2d_backward(g, x, idx, *args)
        ref = torch.ops.aten.max_pool2d_with_indices_backward(g, x, *args, idx)
        assert ours.is_contiguous(memory_format=torch.channels_last)
        assert_close(ours, ref, dtype)
        if dtype == torch.float32:  # same additions in the same order as the scatter
            assert torch.equal(ours, ref)
        stray = torch.randint(0, 11 * 10, idx.shape, generator=gen).contiguous(
            memory_format=torch.channels_last)
        ours = torch.ops.cnnext.max_pool2d_backward(g, x, stray, *args)
        ref = torch.ops.aten.max_pool2d_with_indices_backward(g, x, *args, stray)
        assert_close(ours, ref, dtype)


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_channels_last_max_backward_rejects_indices_past_int32(monkeypatch, isa):
    """The AVX-512 gather compares indices narrowed to int32 with saturation: an index that
    is a pixel plus 2^32 (or minus it) must not pass for that pixel; it lies outside the plane."""
    monkeypatch.setenv("CNNEXT_ISA", isa)
    x = torch.randn(1, 32, 6, 6).contiguous(memory_format=torch.channels_last)
    args = ([3, 3], [2, 2], [0, 0], [1, 1], False)
    out, idx = torch.ops.cnnext.max_pool2d(x, *args)
    g = torch.ones_like(out)
    for shift in (2 ** 32, -(2 ** 32)):
        with pytest.raises(RuntimeError, match="outside"):
            torch.ops.cnnext.max_pool2d_backward(g, x, idx + shift, *args)


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_channels_last_avg_backward_gather(monkeypatch, isa, dtype):
    """channels_last average backward gathers each pixel's covering shares and writes it once
    (vector lanes where a vector of channels fits, C = 37; scalar where not, C = 5)."""
    monkeypatch.setenv("CNNEXT_ISA", isa)
    cases = [dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=2),
             dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
             dict(kernel_size=(3, 2), stride=(2, 1), divisor_override=5)]
    for channels in (37, 5):
        x = torch.randn(2, channels, 9, 8).to(dtype).contiguous(memory_format=torch.channels_last)
        for fn in [lambda m, t, a=a: m.avg_pool2d(t, **a) for a in cases] + [
                lambda m, t: m.adaptive_avg_pool2d(t, (4, 3))]:
            ours = _grad(lambda t: fn(CF, t), x, 3)
            assert ours.is_contiguous(memory_format=torch.channels_last)
            assert_close(ours, _grad(lambda t: fn(F, t), x, 3), dtype)

"""Winograd F(4x4, 3x3) (float32, 3x3 stride-1 layers, any dilation): forward and grad_input
against float64 torch, on every ISA, both schedules, tile edges and thread counts.

Tolerance: Winograd's transforms multiply the rounding error of a direct float32 sum by about
10-50 (measured: 1.6e-5 of max|out| at C_in = 512 vs 3e-7 for torch's float32). We assert
max|ours - float64 reference| <= 5e-5 * max|reference| (so a wrong tap, a shifted tile or a
dropped edge, all of order 1e-1 or more, cannot pass), and that the im2col path is still used
(bit-identically) wherever Winograd is not chosen.
"""
import pytest
import torch
import torch.nn.functional as F

import cnnext

# Relative to the largest output magnitude (see module docstring).
WINOGRAD_RTOL = 5e-5

# (N, C_in, H, W, C_out, padding, dilation)
SHAPES = [
    (2, 16, 9, 11, 16, 1, 1),         # tiles cut by both edges; one block: phases split over threads
    (1, 17, 5, 5, 19, 1, 1),          # channels not a multiple of the micro-kernel rows or lanes
    (3, 20, 13, 6, 24, (2, 0), 1),    # asymmetric padding, odd batch
    (1, 16, 3, 3, 16, 0, 1),          # output 1x1: a single, mostly empty tile
    (2, 16, 4, 4, 18, 0, 1),          # output 2x2
    (2, 18, 15, 17, 17, 2, 2),        # dilation 2: four phases, each its own tile grid
    (1, 16, 14, 19, 16, (1, 3), (2, 3)),  # unequal dilations and paddings
    (2, 16, 12, 12, 16, 4, 3),        # dilation 3: grad_input is Winograd with padding 2
    (1, 16, 6, 6, 16, 3, 1),          # padding 3 > 2 * dilation: grad_input falls back to im2col
]
# Several tile blocks per thread (the schedule sharing one transformed U).
TILE_BLOCKS = (4, 32, 40, 40, 32, 1, 1)
# U beyond 4 MiB while V of all tiles is small: the channel-sliver schedule.
CHANNEL_SLIVERS = (1, 200, 8, 8, 200, 1, 1)
SHAPES += [TILE_BLOCKS, CHANNEL_SLIVERS]


def _set_env(monkeypatch, **env):
    for k in ("CNNEXT_CONV_WORKSPACE_BYTES", "CNNEXT_CONV_ALGO", "CNNEXT_ISA"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def _max_rel_err(actual, reference):
    return ((actual.double() - reference).abs().max() / reference.abs().max()).item()


def _check(shape, bias=True, channels_last=False):
    n, c, h, w, co, p, d = shape
    x64 = torch.randn(n, c, h, w, dtype=torch.float64, requires_grad=True)
    w64 = torch.randn(co, c, 3, 3, dtype=torch.float64, requires_grad=True)
    b64 = torch.randn(co, dtype=torch.float64) if bias else None
    ref = F.conv2d(x64, w64, b64, 1, p, d)
    go = torch.randn_like(ref)
    ref_gx, ref_gw = torch.autograd.grad(ref, (x64, w64), go)

    x = x64.detach().float()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    wt = w64.detach().float().requires_grad_()
    y = cnnext.functional.conv2d(x, wt, None if b64 is None else b64.float(), 1, p, d)
    gx, gw = torch.autograd.grad(y, (x, wt), go.float())
    assert y.shape == ref.shape and gx.shape == ref_gx.shape
    assert _max_rel_err(y, ref) <= WINOGRAD_RTOL
    assert _max_rel_err(gx, ref_gx) <= WINOGRAD_RTOL
    # grad_weight stays on im2col + GEMM: float32 tolerance of a plain sum.
    assert _max_rel_err(gw, ref_gw) <= 1e-5
    return y.detach(), gx


@pytest.mark.parametrize("shape", SHAPES)
def test_winograd_matches_float64(monkeypatch, shape):
    _set_env(monkeypatch, CNNEXT_CONV_ALGO="winograd")
    _check(shape)


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_winograd_each_isa(monkeypatch, isa):
    _set_env(monkeypatch, CNNEXT_CONV_ALGO="winograd", CNNEXT_ISA=isa)
    for shape in (SHAPES[0], SHAPES[1], SHAPES[5], CHANNEL_SLIVERS):
        _check(shape, bias=shape[0] % 2 == 0)


def test_winograd_no_bias_and_channels_last(monkeypatch):
    _set_env(monkeypatch, CNNEXT_CONV_ALGO="winograd")
    _check(SHAPES[2], bias=False, channels_last=True)
    _check(SHAPES[5], bias=False, channels_last=True)


def test_winograd_is_a_distinct_path(monkeypatch):
    """The forced path really runs Winograd (its rounding differs from im2col's) and gives the
    same values to within the stated tolerance; the im2col path is untouched by it."""
    x = torch.randn(2, 64, 12, 12)
    w = torch.randn(64, 64, 3, 3)
    _set_env(monkeypatch, CNNEXT_CONV_ALGO="winograd")
    wino = cnnext.functional.conv2d(x, w, None, 1, 1)
    _set_env(monkeypatch, CNNEXT_CONV_ALGO="im2col")
    im2col = cnnext.functional.conv2d(x, w, None, 1, 1)
    ref = F.conv2d(x.double(), w.double(), None, 1, 1)
    assert not torch.equal(wino, im2col)
    assert _max_rel_err(wino, ref) <= WINOGRAD_RTOL
    assert _max_rel_err(im2col, ref) <= 1e-6


@pytest.mark.parametrize(
    "shape",
    [
        (8, 64, 16, 16, 64, 1, 1),
        (1, 512, 7, 7, 512, 1, 1),
        (8, 8, 16, 16, 8, 1, 1),
        (8, 16, 16, 16, 32, 1, 1),
        (8, 32, 16, 16, 32, 1, 2),   # dilated: Winograd per phase
    ],
)
def test_auto_choice(monkeypatch, shape):
    """auto runs the row the rule reports (bit-identical to that row forced), and Winograd
    is among the rows that apply to these float32 3x3 stride-1 layers."""
    n, c, h, w, co, p, d = shape
    x = torch.randn(n, c, h, w)
    wt = torch.randn(co, c, 3, 3)
    _set_env(monkeypatch)
    rows = cnnext.backends.cpu.algorithms((n, c, h, w), (co, c, 3, 3), 1, p, d)
    assert "winograd" in rows
    choice = cnnext.backends.cpu.choice((n, c, h, w), (co, c, 3, 3), 1, p, d)
    assert choice in rows
    auto = cnnext.functional.conv2d(x, wt, None, 1, p, d)
    _set_env(monkeypatch, CNNEXT_CONV_ALGO=choice)
    forced = cnnext.functional.conv2d(x, wt, None, 1, p, d)
    assert torch.equal(auto, forced)


def test_float64_never_uses_winograd(monkeypatch):
    """Winograd is float32 only: float64 results stay at float64 accuracy even when forced."""
    _set_env(monkeypatch, CNNEXT_CONV_ALGO="winograd")
    x = torch.randn(2, 32, 12, 12, dtype=torch.float64)
    w = torch.randn(32, 32, 3, 3, dtype=torch.float64)
    y = cnnext.functional.conv2d(x, w, None, 1, 1)
    torch.testing.assert_close(y, F.conv2d(x, w, None, 1, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [SHAPES[0], TILE_BLOCKS, CHANNEL_SLIVERS])
def test_winograd_same_bits_for_any_thread_count(monkeypatch, shape):
    _set_env(monkeypatch, CNNEXT_CONV_ALGO="winograd")
    old = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            torch.manual_seed(3)
            results.append(_check(shape))
    finally:
        torch.set_num_threads(old)
    for a, b in zip(*results):
        assert torch.equal(a, b)

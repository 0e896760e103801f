"""Each CPU conv2d path, forced, against torch: forward and every gradient.

Paths: the direct kernel (depthwise and few-input-channel layers, per ISA), the implicit-GEMM
forward (short reductions, per ISA), im2col +
GEMM with the column workspace chunked by output rows (tiny budget), several small images per
GEMM (default budget), the 1x1 pointwise GEMM, plus batch 0, odd batches, non-contiguous
tensors, a thread count of 1 and 2, and bit-identical repeats.
"""
import pytest
import torch
import torch.nn.functional as F

import cnnext
from conftest import assert_close

# (N, C_in, H, W, C_out, k, stride, padding, dilation, groups)
DEPTHWISE = [
    (2, 4, 9, 11, 4, 3, 1, 1, 1, 4),
    (3, 3, 12, 10, 6, 3, 2, 1, 1, 3),     # channel multiplier 2, stride 2
    (2, 2, 13, 9, 2, (3, 5), (2, 3), (2, 1), (1, 2), 2),
    (1, 5, 7, 7, 5, 5, 1, 2, 2, 5),
    (5, 1, 10, 10, 3, 5, 1, 2, 1, 1),     # a single-channel first layer (LeNet-like)
    (2, 3, 8, 8, 3, 3, 3, 0, 1, 3),       # stride 3: three phases
    (2, 2, 6, 6, 2, 1, 1, 0, 1, 2),       # 1x1 depthwise
    (2, 2, 6, 7, 4, 3, 1, 3, 1, 2),       # padding past the kernel extent: scatter grad_input
    (3, 3, 10, 9, 5, 3, 1, 1, 1, 1),      # RGB 3x3: direct over 3 input channels
    (2, 6, 8, 8, 4, 3, 2, 1, 1, 2),       # 3 input channels per group, stride 2
    (2, 4, 9, 9, 3, 2, 1, 1, 2, 1),       # 4 input channels, dilated 2x2
]
GENERAL = [
    (3, 5, 9, 11, 7, 3, 1, 1, 1, 1),
    (2, 4, 12, 10, 6, 3, 2, 1, 1, 2),
    (5, 3, 11, 11, 4, (3, 2), (2, 1), (1, 2), (2, 1), 1),
    (4, 6, 8, 8, 9, 3, 1, 2, 2, 3),
    (3, 8, 7, 9, 4, 1, 1, 0, 1, 1),       # pointwise: the image is the column matrix
    (2, 8, 7, 9, 6, 1, 1, 0, 1, 2),       # grouped pointwise
    (3, 4, 9, 9, 5, 1, 2, 1, 1, 1),       # 1x1 with stride/padding: not pointwise
    (1, 3, 15, 13, 4, 5, 1, 2, 1, 1),     # batch 1: parallelism inside the GEMM
]
PATHS = {
    "auto": {},
    "chunked": {"CNNEXT_CONV_WORKSPACE_BYTES": "256", "CNNEXT_CONV_ALGO": "im2col"},
    "im2col": {"CNNEXT_CONV_ALGO": "im2col"},
    "direct": {"CNNEXT_CONV_ALGO": "direct"},
    "implicit": {"CNNEXT_CONV_ALGO": "implicit"},
}
# Layers the implicit-GEMM forward is built for: short reductions, stride phases, wide rows
# that overhang the next row, stem-like 7x7 stride 2, LeNet-like 5x5, groups.
IMPLICIT = [
    (3, 6, 14, 14, 16, 5, 1, 0, 1, 1),        # LeNet C2
    (2, 3, 29, 31, 64, 7, 2, 3, 1, 1),        # ResNet stem, odd sizes
    (2, 1, 28, 28, 6, 5, 1, 2, 1, 1),         # LeNet C1
    (1, 4, 9, 11, 7, (3, 2), (2, 3), (1, 2), (2, 1), 1),
    (2, 5, 6, 7, 3, (2, 4), (3, 1), (0, 3), (2, 2), 1),
    (2, 6, 8, 8, 9, 3, 1, 2, 2, 3),           # groups: one packed weight block per group
    (1, 1, 5, 5, 1, 5, 1, 0, 1, 1),           # one output pixel
    (3, 4, 9, 9, 5, 1, 2, 1, 1, 1),           # 1x1 with stride and padding
    (1, 3, 200, 9, 20, 3, 1, 1, 1, 1),        # several row chunks per image (batch 1: split)
    (2, 5, 11, 10, 7, 3, 1, (1, 2), (2, 3), 1),  # dilated: grad_input as an implicit forward too
    (2, 4, 6, 6, 5, 3, 1, 3, 1, 1),           # padding past the kernel: grad_input on col2im
]


def _set_env(monkeypatch, env):
    for k in ("CNNEXT_CONV_WORKSPACE_BYTES", "CNNEXT_CONV_ALGO", "CNNEXT_ISA"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def _run(fn, x, w, b, cfg, go):
    stride, padding, dilation, groups = cfg
    x = x.detach().requires_grad_()
    w = w.detach().requires_grad_()
    b = b.detach().requires_grad_() if b is not None else None
    y = fn(x, w, b, stride, padding, dilation, groups)
    y.backward(go)
    return y.detach(), x.grad, w.grad, (b.grad if b is not None else None)


def _check(shape, dtype, bias=True, noncontig=False):
    n, c, h, wd, co, k, s, p, d, g = shape
    k = (k, k) if isinstance(k, int) else k
    x = torch.randn(n, c, h, wd, dtype=dtype)
    w = torch.randn(co, c // g, *k, dtype=dtype)
    b = torch.randn(co, dtype=dtype) if bias else None
    if noncontig:  # channels-last storage and a transposed-then-back weight
        x = x.contiguous(memory_format=torch.channels_last)
        w = w.transpose(2, 3).contiguous().transpose(2, 3)
    cfg = (s, p, d, g)
    ref_y = F.conv2d(x, w, b, *cfg)
    go = torch.randn_like(ref_y)
    if noncontig:  # grad_output with a zero stride
        go = torch.randn(1, *ref_y.shape[1:], dtype=dtype).expand_as(ref_y)
    ours = _run(cnnext.functional.conv2d, x, w, b, cfg, go)
    ref = _run(F.conv2d, x, w, b, cfg, go)
    for a, e in zip(ours, ref):
        if e is None:
            assert a is None
        else:
            assert_close(a, e, dtype)
    return ours


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("path", ["auto", "im2col", "direct"])
@pytest.mark.parametrize("shape", DEPTHWISE)
def test_depthwise_shapes(monkeypatch, shape, path, dtype):
    _set_env(monkeypatch, PATHS[path])
    _check(shape, dtype)


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_depthwise_each_isa(monkeypatch, isa):
    _set_env(monkeypatch, {"CNNEXT_ISA": isa, "CNNEXT_CONV_ALGO": "direct"})
    for shape in DEPTHWISE[:3] + DEPTHWISE[-3:]:
        _check(shape, torch.float32)
        _check(shape, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("path", ["auto", "chunked"])
@pytest.mark.parametrize("shape", GENERAL)
def test_im2col_shapes(monkeypatch, shape, path, dtype):
    _set_env(monkeypatch, PATHS[path])
    _check(shape, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", IMPLICIT + GENERAL)
def test_implicit_shapes(monkeypatch, shape, dtype):
    _set_env(monkeypatch, PATHS["implicit"])
    _check(shape, dtype)


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_implicit_each_isa(monkeypatch, isa):
    _set_env(monkeypatch, {"CNNEXT_ISA": isa, "CNNEXT_CONV_ALGO": "implicit"})
    for shape in IMPLICIT:
        _check(shape, torch.float32)
        _check(shape, torch.float64)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("path", ["auto", "chunked", "im2col", "implicit"])
def test_thread_counts_and_odd_batches(monkeypatch, path, threads):
    _set_env(monkeypatch, PATHS[path])
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for n in (1, 3, 7):  # remainders of the image groups and of the grad_weight parts
            _check((n, 4, 6, 7, 5, 3, 1, 1, 1, 1), torch.float64)
            _check((n, 4, 6, 7, 4, 3, 2, 1, 1, 4), torch.float64)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("path", ["auto", "chunked", "implicit"])
def test_noncontiguous_and_no_bias(monkeypatch, path):
    _set_env(monkeypatch, PATHS[path])
    for shape in (GENERAL[0], GENERAL[4], DEPTHWISE[1]):
        _check(shape, torch.float64, bias=False, noncontig=True)
        _check(shape, torch.float32, bias=True, noncontig=True)


@pytest.mark.parametrize("path", ["auto", "chunked"])
def test_batch_zero(monkeypatch, path):
    _set_env(monkeypatch, PATHS[path])
    for shape in ((0, 4, 6, 6, 4, 3, 1, 1, 1, 4), (0, 3, 6, 6, 5, 3, 1, 1, 1, 1)):
        n, c, h, wd, co, k, s, p, d, g = shape
        x = torch.randn(n, c, h, wd, requires_grad=True)
        w = torch.randn(co, c // g, k, k, requires_grad=True)
        b = torch.randn(co, requires_grad=True)
        y = cnnext.functional.conv2d(x, w, b, s, p, d, g)
        assert y.shape == F.conv2d(x, w, b, s, p, d, g).shape
        y.sum().backward()
        assert x.grad.shape == x.shape
        assert torch.equal(w.grad, torch.zeros_like(w))
        assert torch.equal(b.grad, torch.zeros_like(b))


def test_zero_input_channels_matches_torch():
    # torch's empty-convolution path returns a zero-channel output whatever out_channels is;
    # the operator itself (called directly) gives the bias.
    x = torch.randn(2, 0, 5, 5)
    w = torch.randn(3, 0, 3, 3)
    b = torch.randn(3)
    y = cnnext.functional.conv2d(x, w, b, padding=1)
    assert_close(y, torch.nn.functional.conv2d(x, w, b, padding=1))
    y_op = torch.ops.cnnext.conv2d(x, w, b, (1, 1), (1, 1), (1, 1), 1)
    assert_close(y_op, b.view(1, 3, 1, 1).expand(2, 3, 5, 5))


@pytest.mark.parametrize("path", ["auto", "chunked", "im2col", "direct", "implicit"])
def test_bit_identical_repeats(monkeypatch, path):
    _set_env(monkeypatch, PATHS[path])
    for shape in (GENERAL[0], GENERAL[1], DEPTHWISE[1], DEPTHWISE[4]):
        torch.manual_seed(1)
        first = _check(shape, torch.float32)
        torch.manual_seed(1)
        second = _check(shape, torch.float32)
        for a, b in zip(first, second):
            assert torch.equal(a, b)


def test_chunked_matches_unchunked_layer_sized(monkeypatch):
    """A mid-sized layer (several row chunks per image, several images) in float64."""
    _set_env(monkeypatch, {"CNNEXT_CONV_WORKSPACE_BYTES": str(64 * 1024)})
    _check((3, 16, 20, 20, 8, 3, 1, 1, 1, 1), torch.float64)
    _check((3, 16, 20, 20, 8, 3, 2, 1, 1, 2), torch.float64)


def test_implicit_same_bits_for_any_thread_count(monkeypatch):
    """Batch >= threads splits images, batch 1 splits row chunks: the bits do not move."""
    _set_env(monkeypatch, PATHS["implicit"])
    old = torch.get_num_threads()
    try:
        for shape in (IMPLICIT[0], IMPLICIT[1], IMPLICIT[-1]):
            n, c, h, wd, co, k, s, p, d, g = shape
            x = torch.randn(n, c, h, wd)
            w = torch.randn(co, c // g, *((k, k) if isinstance(k, int) else k))
            outs = []
            for threads in (1, 2):
                torch.set_num_threads(threads)
                outs.append(cnnext.functional.conv2d(x, w, None, s, p, d, g))
            assert torch.equal(outs[0], outs[1])
    finally:
        torch.set_num_threads(old)


def test_unknown_algorithm_override_is_a_clear_error(monkeypatch):
    _set_env(monkeypatch, {"CNNEXT_CONV_ALGO": "fft"})
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with pytest.raises(RuntimeError, match="CNNEXT_CONV_ALGO must be auto, im2col, direct, "
                                           "winograd, implicit, pointwise, matmul or grouped, got "
                                           "'fft'"):
        cnnext.functional.conv2d(x, w)


@pytest.mark.parametrize(
    "shape",
    [
        (4, 6, 14, 14, 16, 5, 1, 0, 1, 1),     # LeNet C2: short reduction
        (2, 3, 30, 30, 64, 7, 2, 3, 1, 1),     # stem-like
        (2, 64, 14, 14, 128, 1, 2, 0, 1, 1),   # 1x1 s2 shortcut
        (2, 64, 14, 14, 32, 3, 2, 1, 1, 1),    # strided 3x3
        (2, 8, 9, 9, 8, 3, 1, 1, 1, 1),        # thin 3x3
        (2, 16, 6, 6, 32, 1, 1, 0, 1, 1),      # pointwise
        (2, 16, 9, 9, 16, 3, 1, 1, 1, 16),     # depthwise
    ],
)
def test_auto_runs_the_reported_choice(monkeypatch, shape):
    """auto's forward gives exactly the bits of the row cnnext.backends.cpu.choice names, and
    that row is one of those that apply."""
    n, c, h, w, co, k, s, p, d, g = shape
    _set_env(monkeypatch, {})
    choice = cnnext.backends.cpu.choice((n, c, h, w), (co, c // g, k, k), s, p, d, g)
    assert choice in cnnext.backends.cpu.algorithms((n, c, h, w), (co, c // g, k, k), s, p, d, g)
    torch.manual_seed(5)
    auto = _check(shape, torch.float32)
    torch.manual_seed(5)
    _set_env(monkeypatch, {"CNNEXT_CONV_ALGO": choice})
    forced = _check(shape, torch.float32)
    assert torch.equal(auto[0], forced[0])

"""The direct depthwise kernels (csrc/cpu/depthwise_conv2d*) against torch: forward, grad_input,
grad_weight and grad_bias over kernel sizes, strides, dilations, channel multipliers and map
sizes (tiny maps, maps narrower than a vector, rows that end mid-vector), every ISA forced,
bit-identical repeats, and float64 gradcheck."""
import pytest
import torch
import torch.nn.functional as F

import cnnext
from conftest import assert_close

# (batch, channels, H, W, multiplier, kernel, stride, padding, dilation)
SHAPES = [
    (2, 3, 7, 7, 1, 3, 1, 1, 1),            # 7x7 map: the flat form (rows share vectors)
    (1, 4, 7, 7, 1, 5, 1, 2, 1),
    (2, 3, 7, 7, 1, 7, 1, 3, 1),            # ConvNeXt's last stage
    (1, 2, 14, 14, 1, 5, 1, 2, 1),          # a row shorter than an AVX-512 vector
    (1, 2, 14, 14, 1, 5, 2, 2, 1),
    (3, 2, 28, 28, 1, 3, 2, 1, 1),
    (1, 2, 37, 21, 1, 3, 1, 1, 1),          # rows ending mid-vector, several vectors a row
    (1, 2, 23, 70, 1, 7, 1, 3, 1),          # more than 4 vectors a row (a second column tile)
    (2, 2, 17, 17, 1, (1, 7), 1, (0, 3), 1),  # Inception's asymmetric kernels
    (1, 2, 17, 17, 1, (7, 1), 1, (3, 0), 1),
    (1, 3, 12, 11, 2, 3, 1, 1, 1),          # channel multiplier 2
    (2, 2, 9, 10, 3, (3, 5), (2, 1), (1, 2), 1),  # multiplier 3, mixed strides
    (1, 2, 15, 16, 1, 3, 1, 2, 2),          # dilation (stride 1: grad_input as a gather)
    (1, 2, 19, 18, 1, 5, 2, 4, 2),          # dilation and stride 2 (scatter)
    (1, 2, 11, 11, 1, 3, 1, 3, 1),          # padding past the kernel: grad_input scattered
    (1, 2, 12, 12, 1, 3, 3, 0, 1),          # stride 3
    (2, 2, 1, 1, 1, 3, 1, 1, 1),            # 1x1 map
    (1, 3, 2, 3, 1, 3, 1, 1, 1),            # 2x3 map
    (1, 2, 2, 3, 2, 5, 2, 2, 1),
    (0, 2, 7, 7, 1, 3, 1, 1, 1),            # batch 0
]


def _grads(fn, x, w, b, cfg, go):
    x = x.detach().requires_grad_()
    w = w.detach().requires_grad_()
    b = b.detach().requires_grad_() if b is not None else None
    y = fn(x, w, b, *cfg)
    y.backward(go)
    return y.detach(), x.grad, w.grad, (b.grad if b is not None else None)


def _inputs(shape, dtype, bias=True, seed=0):
    n, c, h, wd, mult, k, s, p, d = shape
    k = (k, k) if isinstance(k, int) else k
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, wd, dtype=dtype, generator=gen)
    w = torch.randn(c * mult, 1, *k, dtype=dtype, generator=gen)
    b = torch.randn(c * mult, dtype=dtype, generator=gen) if bias else None
    cfg = (s, p, d, c)
    go = torch.randn(F.conv2d(x, w, b, *cfg).shape, dtype=dtype, generator=gen)
    return x, w, b, cfg, go


def _check(shape, dtype, bias=True):
    x, w, b, cfg, go = _inputs(shape, dtype, bias)
    ours = _grads(cnnext.functional.conv2d, x, w, b, cfg, go)
    ref = _grads(F.conv2d, x, w, b, cfg, go)
    for name, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, ref):
        if e is None:
            assert a is None, name
        else:
            assert_close(a, e, dtype, msg=lambda m: f"{name} {shape} {dtype}: {m}")
    return ours


@pytest.fixture
def isa_env(monkeypatch):
    def set_isa(isa):
        for k in ("CNNEXT_CONV_ALGO", "CNNEXT_ISA", "CNNEXT_CONV_WORKSPACE_BYTES"):
            monkeypatch.delenv(k, raising=False)
        if isa:
            monkeypatch.setenv("CNNEXT_ISA", isa)
    return set_isa


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_every_shape_every_isa(isa_env, isa):
    isa_env(isa)
    for shape in SHAPES:
        _check(shape, torch.float64)
        _check(shape, torch.float32, bias=shape[0] != 1)


def test_direct_applies_and_auto_runs_the_reported_choice(isa_env, monkeypatch):
    # The direct row applies to a depthwise layer; auto runs the row the rule reports (same
    # bits as forcing it).
    isa_env(None)
    shape = (2, 8, 14, 14, 1, 5, 1, 2, 1)
    problem = ((2, 8, 14, 14), (8, 1, 5, 5), 1, 2, 1, 8)
    assert "direct" in cnnext.backends.cpu.algorithms(*problem)
    choice = cnnext.backends.cpu.choice(*problem)
    auto = _check(shape, torch.float32)
    monkeypatch.setenv("CNNEXT_CONV_ALGO", choice)
    forced = _check(shape, torch.float32)
    assert torch.equal(auto[0], forced[0])


@pytest.mark.parametrize("shape", [(3, 6, 7, 7, 1, 7, 1, 3, 1), (2, 5, 20, 19, 1, 5, 2, 2, 1)])
def test_bit_identical_repeats_and_thread_counts(isa_env, monkeypatch, shape):
    # The direct kernel's promise: output, grad_input and grad_bias are the same bits for 1 and
    # 2 threads; grad_weight is summed per image in batch order, so it is too.
    isa_env(None)
    monkeypatch.setenv("CNNEXT_CONV_ALGO", "direct")
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (2, 2, 1):
            torch.set_num_threads(threads)
            x, w, b, cfg, go = _inputs(shape, torch.float32)
            runs.append(_grads(cnnext.functional.conv2d, x, w, b, cfg, go))
    finally:
        torch.set_num_threads(before)
    for other in runs[1:]:
        for a, e in zip(runs[0], other):
            assert torch.equal(a, e)


@pytest.mark.parametrize("shape", [(2, 2, 6, 5, 1, 3, 1, 1, 1), (1, 2, 7, 6, 2, (3, 5), 2, 2, 1)])
def test_gradcheck_float64(shape):
    x, w, b, cfg, _ = _inputs(shape, torch.float64)
    x.requires_grad_(), w.requires_grad_(), b.requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w, b: cnnext.functional.conv2d(x, w, b, *cfg),
                                    (x, w, b))


def test_inf_past_a_row_stays_out_of_other_sums():
    # Whole-vector reads take in values past a row's end; an inf there must not turn the
    # other taps' weight gradients or the neighbouring pixels' gradients into NaN.
    x, w, b, cfg, go = _inputs((1, 2, 9, 9, 1, 3, 2, 1, 1), torch.float64)
    x[0, 0, 4, 8] = float("inf")
    ours = _grads(cnnext.functional.conv2d, x, w, b, cfg, go)
    ref = _grads(F.conv2d, x, w, b, cfg, go)
    for a, e in zip(ours, ref):
        torch.testing.assert_close(a, e, equal_nan=True)


# ---- channels_last (NHWC) tensors, computed as they lie --------------------------------------
NHWC_SHAPES = [
    (2, 16, 7, 7, 1, 7, 1, 3, 1),
    (1, 32, 14, 13, 1, 5, 2, 2, 1),         # stride 2: grad_input by stride phases
    (3, 20, 9, 11, 1, 3, 1, 1, 1),          # a partial channel block (20 = 16 + 4)
    (1, 5, 12, 10, 1, (1, 7), 1, (0, 3), 1),
    (1, 6, 13, 12, 1, 3, (2, 3), 2, 2),     # dilation, unequal strides
    (1, 4, 11, 11, 1, 3, 1, 3, 1),          # padding past the kernel
    (2, 3, 1, 1, 1, 3, 1, 1, 1),            # 1x1 map
    (0, 4, 5, 5, 1, 3, 1, 1, 1),            # batch 0
]

LAYOUTS = {"input": (True, False), "weight": (False, True), "both": (True, True)}


def _check_layouts(shape, dtype, which):
    x, w, b, cfg, go = _inputs(shape, dtype)
    x_cl, w_cl = LAYOUTS[which]
    cl = torch.channels_last
    if x_cl:
        x, go = x.contiguous(memory_format=cl), go.contiguous(memory_format=cl)
    if w_cl:
        w = w.contiguous(memory_format=cl)
    ours = _grads(cnnext.functional.conv2d, x, w, b, cfg, go)
    ref = _grads(F.conv2d, x, w, b, cfg, go)
    for name, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, ref):
        assert_close(a, e, dtype, msg=lambda m: f"{name} {shape} {which}: {m}")
        if a.numel() and (name == "output" or (name == "grad_input" and x_cl)):
            # Output (and, for a channels_last input, grad_input) in the layout torch gives
            # (batch 0 excepted: there torch's layout rule differs from suggest_memory_format's).
            assert a.is_contiguous(memory_format=cl) == e.is_contiguous(memory_format=cl), name
    return ours


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_channels_last_every_isa(isa_env, isa):
    isa_env(isa)
    for shape in NHWC_SHAPES:
        _check_layouts(shape, torch.float64, "input")
        _check_layouts(shape, torch.float32, "both")


@pytest.mark.parametrize("which", ["weight", "both"])
def test_channels_last_weight_layouts(isa_env, which):
    isa_env(None)
    for shape in NHWC_SHAPES[:3]:
        _check_layouts(shape, torch.float32, which)


def test_channels_last_without_the_direct_kernel(isa_env, monkeypatch):
    # CNNEXT_CONV_ALGO=im2col takes the NCHW path: same values, same layouts.
    isa_env(None)
    monkeypatch.setenv("CNNEXT_CONV_ALGO", "im2col")
    for shape in NHWC_SHAPES[:2] + NHWC_SHAPES[-2:]:
        _check_layouts(shape, torch.float32, "input")


def test_channels_last_bit_identical_thread_counts(isa_env):
    isa_env(None)
    shape = (3, 24, 10, 9, 1, 5, 2, 2, 1)
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (2, 2, 1):
            torch.set_num_threads(threads)
            runs.append(_check_layouts(shape, torch.float32, "input"))
    finally:
        torch.set_num_threads(before)
    for other in runs[1:]:
        for a, e in zip(runs[0], other):
            assert torch.equal(a, e)


def test_channels_last_gradcheck_and_opcheck():
    x, w, b, cfg, _ = _inputs((1, 3, 4, 5, 1, 3, 2, 1, 1), torch.float64)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    w.requires_grad_(), b.requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w, b: cnnext.functional.conv2d(x, w, b, *cfg),
                                    (x, w, b))
    s, p, d, g = cfg
    torch.library.opcheck(torch.ops.cnnext.conv2d.default, (x, w, b, [s, s], [p, p], [d, d], g))

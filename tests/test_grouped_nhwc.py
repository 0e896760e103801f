"""The grouped_nhwc row (csrc/cpu/grouped_conv2d_nhwc*, grouped_conv2d_bf16_dot*): grouped
convolutions with 2-8 channels per group on channels_last tensors, against torch. Channels per
group 2, 4 and 8 (as many as each ISA's vectors hold whole: AVX2 up to 4, SSE2 2), channel
counts that end mid-vector (the overlapping last vector), strides, padding past the kernel,
dilation, asymmetric kernels, output rows shorter than a pixel tile, batch 0; every ISA;
float64, float32 and bfloat16 (forward, grad_input, grad_weight); the same bits for 1 and 2
threads; the rule's choice; backward through the other rows."""
import pytest
import torch
import torch.nn.functional as F

import cnnext
from conftest import assert_close

CL = torch.channels_last

# (batch, channels, H, W, channels per group, kernel, stride, padding, dilation)
SHAPES = [
    (2, 16, 7, 9, 8, 3, 1, 1, 1),            # two groups of 8: one vector on AVX-512
    (1, 48, 12, 12, 8, 3, 2, 1, 1),          # RegNet's stride-2 layer: 6 groups
    (2, 104, 9, 11, 8, 3, 1, 1, 1),          # 13 groups: the last vector overlaps
    (1, 440, 5, 5, 8, 3, 2, 1, 1),           # 55 groups, 5x5 map
    (2, 128, 6, 13, 4, 3, 1, 1, 1),          # ResNeXt's 4 channels a group
    (1, 64, 8, 8, 2, 3, 1, 1, 1),            # 2 a group
    (2, 64, 7, 7, 2, 3, 2, 1, 1),
    (1, 24, 9, 9, 8, (1, 5), 1, (0, 2), 1),  # asymmetric kernel
    (1, 32, 11, 10, 4, 3, 1, 2, 2),          # dilation 2
    (1, 16, 4, 4, 4, 3, 1, 3, 1),            # padding past the kernel: all-padding windows
    (1, 40, 3, 2, 8, 5, 3, 2, 1),            # output rows shorter than a pixel tile
    (0, 16, 5, 5, 8, 3, 1, 1, 1),            # batch 0
]


def _ids(shape):
    return "-".join(str(v) for v in shape)


def _inputs(shape, dtype, bias, seed=0):
    n, c, h, w, k, kernel, s, p, d = shape
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, dtype=dtype, generator=gen).contiguous(memory_format=CL)
    wt = torch.randn(c, k, *kernel, dtype=dtype, generator=gen)
    b = torch.randn(c, dtype=dtype, generator=gen) if bias else None
    return x, wt, b, (s, p, d, c // k)


@pytest.fixture
def grouped(monkeypatch):
    for k in ("CNNEXT_CONV_ALGO", "CNNEXT_ISA"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("CNNEXT_CONV_ALGO", "grouped")
    return monkeypatch


def _pair(v):
    return list(v) if isinstance(v, tuple) else [v, v]


def _forward(x, w, b, cfg):
    s, p, d, g = cfg
    return torch.ops.cnnext.conv2d(x, w, b, _pair(s), _pair(p), _pair(d), g)


@pytest.mark.parametrize("isa", ["avx512", "avx2", "portable"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_forward_against_torch(grouped, shape, dtype, isa):
    grouped.setenv("CNNEXT_ISA", isa)
    if cnnext.backends.cpu.isa() != isa:
        pytest.skip(f"this CPU has no {isa}")
    lanes = {"avx512": 64, "avx2": 32, "portable": 16}[isa] // (8 if dtype == torch.float64 else 4)
    for bias in (True, False):
        x, w, b, cfg = _inputs(shape, dtype, bias)
        choice = cnnext.backends.cpu.choice(x.shape, w.shape, *cfg, dtype=dtype,
                                            channels_last=True)
        # The row holds whole groups in a vector; other widths fall to im2col_nhwc.
        assert choice == ("grouped_nhwc" if shape[4] < lanes else "im2col_nhwc")
        out = _forward(x, w, b, cfg)
        assert out.is_contiguous(memory_format=CL) or out.numel() == 0
        assert_close(out, F.conv2d(x, w, b, *cfg), dtype)


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SHAPES + [(2, 32, 9, 8, 4, 2, 3, 0, 1),   # pixels no tap reaches
                                            (1, 48, 13, 11, 8, 5, 2, 2, 2)],  # stride 2, dilation 2
                         ids=_ids)
def test_grad_input(grouped, shape, dtype, isa):
    grouped.setenv("CNNEXT_ISA", isa)
    if cnnext.backends.cpu.isa() != isa:
        pytest.skip(f"this CPU has no {isa}")
    x, w, b, cfg = _inputs(shape, dtype, False)
    s, p, d, g = cfg
    lanes = {"avx512": 64, "avx2": 32}[isa] // (8 if dtype == torch.float64 else 4)
    served = shape[4] < lanes  # the transposed forward at stride 1, a gather otherwise
    assert (cnnext.backends.cpu.choice(x.shape, w.shape, *cfg, dtype=dtype, pass_="grad_input",
                                       channels_last=True) == "grouped_nhwc") == served
    go = torch.randn(F.conv2d(x, w, None, *cfg).shape, dtype=dtype).contiguous(memory_format=CL)
    gi, _, _ = torch.ops.cnnext.conv2d_backward(go, x, w, _pair(s), _pair(p), _pair(d), g,
                                                [True, False, False])
    xs = x.detach().clone().requires_grad_()
    F.conv2d(xs, w, None, *cfg).backward(go)
    assert gi.is_contiguous(memory_format=CL) or gi.numel() == 0
    assert_close(gi, xs.grad, dtype)


def test_same_bits_for_one_and_two_threads(grouped):
    x, w, b, cfg = _inputs((2, 104, 9, 11, 8, 3, 1, 1, 1), torch.float32, True)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = _forward(x, w, b, cfg)
        torch.set_num_threads(1)
        one = _forward(x, w, b, cfg)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_applies_only_where_it_should():
    algos = cnnext.backends.cpu.algorithms
    # channels_last forward with fewer channels a group than the active ISA's float32 lanes
    # (AVX-512 16, AVX2 8, portable 4), in == out
    lanes = {"avx512": 16, "avx2": 8, "portable": 4}[cnnext.backends.cpu.isa()]
    for k in (2, 4, 8):
        applies = "grouped_nhwc" in algos((1, 64, 8, 8), (64, k, 3, 3), 1, 1, 1, 64 // k,
                                          channels_last=True)
        assert applies == (k < lanes), k
    for size, weight, groups in (((1, 64, 8, 8), (64, 1, 3, 3), 64),    # depthwise
                                 ((1, 64, 8, 8), (128, 8, 3, 3), 8),    # out != in a group
                                 ((1, 96, 8, 8), (96, 32, 3, 3), 3),    # 32 a group
                                 ((1, 64, 8, 8), (64, 16, 3, 3), 4),    # 16 a group
                                 ((1, 12, 8, 8), (12, 6, 3, 3), 2),     # 6 a group
                                 ((1, 8, 8, 8), (8, 4, 3, 3), 2)):      # under 16 channels
        assert "grouped_nhwc" not in algos(size, weight, 1, 1, 1, groups, channels_last=True)
    assert "grouped_nhwc" not in algos((1, 64, 8, 8), (64, 2, 3, 3), 1, 1, 1, 32)  # NCHW
    # grad_input (the transposed problem's forward at stride 1, a gather otherwise), never
    # grad_weight
    for stride, padding in ((1, 1), (2, 1), (1, 3)):  # (1, 3): padding past the kernel
        assert "grouped_nhwc" in algos((1, 64, 8, 8), (64, 2, 3, 3), stride, padding, 1, 32,
                                       pass_="grad_input", channels_last=True)
    assert "grouped_nhwc" not in algos((1, 64, 8, 8), (64, 2, 3, 3), 1, 1, 1, 32,
                                       pass_="grad_weight", channels_last=True)


@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[4], SHAPES[7]], ids=_ids)
def test_training_through_the_functional_api(shape):
    # Whatever the rule picks for each pass, forward and gradients match torch.
    x, w, b, cfg = _inputs(shape, torch.float64, True)
    grads = []
    for fn in (cnnext.functional.conv2d, F.conv2d):
        xs, ws, bs = (t.detach().clone().requires_grad_() for t in (x, w, b))
        y = fn(xs, ws, bs, *cfg)
        y.backward(torch.ones_like(y))
        grads.append((y.detach(), xs.grad, ws.grad, bs.grad))
    for a, e in zip(*grads):
        assert_close(a, e, torch.float64)


# 16 channels a group: bfloat16 pair dot products only (AVX512-BF16)
SIXTEEN_A_GROUP = [(2, 32, 7, 9, 16, 3, 1, 1, 1), (1, 64, 9, 8, 16, 3, 2, 1, 1),
                   (3, 48, 5, 13, 16, 3, 1, 2, 1)]


def _force_bf16_isa(monkeypatch, isa):
    monkeypatch.setenv("CNNEXT_ISA", isa)
    if isa == "avx512bf16":
        if cnnext.backends.cpu.bf16_isa() != "avx512bf16":
            pytest.skip("this CPU has no AVX512-BF16")
    elif cnnext.backends.cpu.isa() != isa:
        pytest.skip(f"this CPU has no {isa}")
    return {"avx512bf16": 16, "avx512": 16, "avx2": 8, "portable": 4}[isa]


# bfloat16 without AVX512-BF16 runs the same loops on bfloat16 storage: inputs widened to
# float32 lanes, weights exact in float32, every output rounded once. So its bits are the
# float32 row's on the widened tensors, rounded to nearest even: a test of the value and of the
# path taken (the float32 copies of the other rows sum in other orders). With AVX512-BF16
# (grouped_conv2d_bf16_dot.cpp) pair dot products sum in another order: the bound alone.
@pytest.mark.parametrize("isa", ["avx512bf16", "avx512", "avx2", "portable"])
@pytest.mark.parametrize("shape", SHAPES + SIXTEEN_A_GROUP, ids=_ids)
def test_bfloat16_forward_is_the_float32_row_rounded(grouped, shape, isa):
    lanes = _force_bf16_isa(grouped, isa)
    for bias in (True, False):
        x, w, b, cfg = _inputs(shape, torch.bfloat16, bias)
        out = cnnext.functional.conv2d(x, w, b, *cfg)
        assert out.dtype == torch.bfloat16
        assert out.is_contiguous(memory_format=CL) or out.numel() == 0
        ref32 = _forward(x.float(), w.float(), None if b is None else b.float(), cfg)
        if shape[4] < lanes and isa != "avx512bf16":
            assert torch.equal(out, ref32.bfloat16())
        # Against exact float64 sums on the same bfloat16 values: half a bfloat16 ulp plus the
        # float32 accumulation error (test_conv_lowp.py states the bound).
        exact = F.conv2d(x.double(), w.double(), None if b is None else b.double(), *cfg)
        magnitude = F.conv2d(x.double().abs(), w.double().abs(),
                             None if b is None else b.double().abs(), *cfg)
        k = w.shape[1] * w.shape[2] * w.shape[3]
        bound = 2.0**-8 * exact.abs() + (k + 2) * 2.0**-24 * magnitude
        assert bool(((out.double() - exact).abs() <= bound).all())


# Stride-1 layers (padding within the kernel) run the forward of the transposed problem, the
# float32 row's grad_input bit for bit; the others gather per input pixel (strides, padding past
# the kernel, pixels no tap reaches).
@pytest.mark.parametrize("isa", ["avx512bf16", "avx512", "avx2", "portable"])
@pytest.mark.parametrize("shape", SHAPES + [(2, 32, 9, 8, 4, 2, 3, 0, 1),   # pixels no tap reaches
                                            (1, 48, 13, 11, 8, 5, 2, 2, 2),  # stride 2, dilation 2
                                            (2, 40, 9, 10, 8, (3, 1), (2, 3), (1, 0), 1)]
                         + SIXTEEN_A_GROUP, ids=_ids)
def test_bfloat16_grad_input(grouped, shape, isa):
    lanes = _force_bf16_isa(grouped, isa)
    x, w, _, cfg = _inputs(shape, torch.bfloat16, False)
    s, p, d, g = cfg
    served = isa != "avx512bf16" and shape[4] < lanes and _pair(s) == [1, 1] and all(
        (k - 1) * dd >= pp for k, dd, pp in zip(w.shape[2:], _pair(d), _pair(p)))
    go = torch.randn(F.conv2d(x.float(), w.float(), None, *cfg).shape).bfloat16()
    go = go.contiguous(memory_format=CL)
    gi, _, _ = torch.ops.cnnext.conv2d_backward(go, x, w, _pair(s), _pair(p), _pair(d), g,
                                                [True, False, False])
    assert gi.dtype == torch.bfloat16
    assert gi.is_contiguous(memory_format=CL) or gi.numel() == 0
    gi32, _, _ = torch.ops.cnnext.conv2d_backward(go.float(), x.float(), w.float(), _pair(s),
                                                  _pair(p), _pair(d), g, [True, False, False])
    if served:
        assert torch.equal(gi, gi32.bfloat16())
    xs = x.double().detach().requires_grad_()
    F.conv2d(xs, w.double(), None, *cfg).backward(go.double())
    err = (gi.double() - xs.grad).abs()
    scale = xs.grad.abs().max() if xs.grad.numel() else 0.0
    assert bool((err <= 2.0**-8 * xs.grad.abs() + 1e-4 * scale).all())


def test_bfloat16_same_bits_for_one_and_two_threads():
    x, w, b, cfg = _inputs((2, 104, 9, 11, 8, 3, 1, 1, 1), torch.bfloat16, True)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = cnnext.functional.conv2d(x, w, b, *cfg)
        torch.set_num_threads(1)
        one = cnnext.functional.conv2d(x, w, b, *cfg)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


@pytest.mark.parametrize("isa", ["avx512bf16", "avx512", "avx2", "portable"])
@pytest.mark.parametrize("shape", SHAPES + SIXTEEN_A_GROUP, ids=_ids)
def test_bfloat16_grad_weight(shape, isa, monkeypatch):
    _force_bf16_isa(monkeypatch, isa)
    x, w, _, cfg = _inputs(shape, torch.bfloat16, False)
    s, p, d, g = cfg
    go = torch.randn(F.conv2d(x.float(), w.float(), None, *cfg).shape).bfloat16()
    go = go.contiguous(memory_format=CL)
    _, gw, _ = torch.ops.cnnext.conv2d_backward(go, x, w, _pair(s), _pair(p), _pair(d), g,
                                                [False, True, False])
    assert gw.dtype == torch.bfloat16 and gw.shape == w.shape
    ws = w.double().detach().requires_grad_()
    F.conv2d(x.double(), ws, None, *cfg).backward(go.double())
    # float32 sums of exact products over every output pixel (at most a few hundred here),
    # rounded once
    err = (gw.double() - ws.grad).abs()
    assert bool((err <= 2.0**-8 * ws.grad.abs() + 1e-5 * ws.grad.abs().max()).all())


def test_bfloat16_grad_weight_same_bits_for_every_thread_count():
    x, w, _, cfg = _inputs((3, 104, 9, 11, 8, 3, 2, 1, 1), torch.bfloat16, False)
    s, p, d, g = cfg
    go = torch.randn(F.conv2d(x.float(), w.float(), None, *cfg).shape).bfloat16()
    go = go.contiguous(memory_format=CL)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(torch.ops.cnnext.conv2d_backward(
                go, x, w, _pair(s), _pair(p), _pair(d), g, [False, True, False])[1])
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(results[0], r) for r in results[1:])

"""Pooling against torch: forward, indices, gradients, memory format, NaN/-inf, errors.

Every case compares cnnext.functional with torch.nn.functional on the same input; when torch
rejects the arguments, cnnext must raise the same exception class."""
import itertools

import pytest
import torch
import torch.nn.functional as F

import cnnext.functional as CF
from cnnext._shapes import pool_output_size
from conftest import assert_close

DTYPES = [torch.float32, torch.float64]
# (dtype, channels_last) pairs for the big grids: each dtype and each layout is covered
# without the full product.
FORMATS = [(torch.float64, False), (torch.float32, True)]


def distinct(shape, dtype, device, channels_last=False):
    """Values without ties (max pooling's index is then unique), shuffled."""
    n = 1
    for s in shape:
        n *= s
    x = (torch.randperm(n, dtype=torch.float64) / max(n, 1) - 0.5).reshape(shape)
    x = x.to(dtype=dtype, device=device)
    return x.to(memory_format=torch.channels_last) if channels_last else x


def outcome(fn):
    try:
        return fn(), None
    except Exception as e:  # noqa: BLE001  (the class is what is compared)
        return None, e


def _strides(t):
    """Strides of the dims that have more than one element (the others' strides are arbitrary:
    torch's CUDA and CPU kernels differ there, e.g. a 2x3x1x1 grad in channels_last)."""
    return tuple(st for st, sz in zip(t.stride(), t.shape) if sz > 1)


def _cuda_channels_last(x):
    return x.is_cuda and x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
        memory_format=torch.channels_last)


def compare(ours_fn, ref_fn, x, dtype, grad=True, indices=False):
    """Runs both on x (with grad), compares outputs, strides, indices and input grads.

    On CUDA with channels_last input, values (not layouts) are compared with torch's NCHW
    kernels: torch's NHWC CUDA kernels have known bugs there (avg_pool2d backward leaves the
    padding out of its window search, so its gradients are wrong whenever padding > 0;
    max_pool2d gives index 0 for an all -inf window, outside the window)."""
    xa = x.detach().clone().requires_grad_(grad)
    xb = x.detach().clone().requires_grad_(grad)
    ref, ref_err = outcome(lambda: ref_fn(xb))
    ours, ours_err = outcome(lambda: ours_fn(xa))
    if ref_err is not None:
        assert ours_err is not None, f"torch raised {ref_err!r}, cnnext did not"
        assert type(ours_err) is type(ref_err), (ours_err, ref_err)
        return
    assert ours_err is None, ours_err
    xv = xb
    ref_values = ref
    if _cuda_channels_last(x):
        xv = x.detach().contiguous().requires_grad_(grad)
        ref_values = ref_fn(xv)
    if indices:
        (ours, ours_idx), (ref, ref_idx), (ref_values, ref_values_idx) = ours, ref, ref_values
        assert ours_idx.dtype == torch.int64
        assert torch.equal(ours_idx, ref_values_idx)
        assert _strides(ours_idx) == _strides(ref_idx)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    assert _strides(ours) == _strides(ref), (ours.stride(), ref.stride())
    assert_close(ours, ref_values, dtype, equal_nan=True)
    if grad and ref.numel() > 0:
        g = torch.randn_like(ref)
        (ga,) = torch.autograd.grad(ours, xa, g)
        (gb,) = torch.autograd.grad(ref, xb, g)
        # torch computes adaptive_avg_pool2d to 1x1 as a mean, whose gradient comes back in
        # NCHW even for channels_last input; ours keeps the input's format there too.
        if not (ref.shape[-2:] == (1, 1) and not indices and x.dim() == 4):
            assert _strides(ga) == _strides(gb)
        if xv is not xb:
            (gb,) = torch.autograd.grad(ref_values, xv, g)
        assert_close(ga, gb, dtype)


# ---- grids --------------------------------------------------------------------------------
# (input H x W, kernel, stride, padding): chosen to hit ceil-mode changes (56 with k3 s2; 5
# with k2 s2 p1, where the ceil window would start in the right padding and is dropped),
# non-square everything, odd and 1x1 inputs.
WINDOWS = [
    ((8, 8), 1, None, 0),
    ((1, 1), 1, 1, 0),
    ((7, 9), 2, None, 0),
    ((7, 9), 2, 1, 1),
    ((7, 9), 3, 2, 1),
    ((9, 7), 3, 3, 0),
    ((56, 56), 3, 2, 1),
    ((56, 56), 3, 2, 0),
    ((5, 5), 2, 2, 1),
    ((6, 6), 3, 2, 1),
    ((10, 11), 5, 2, 2),
    ((10, 11), 5, 3, (1, 2)),
    ((8, 9), (2, 3), (1, 2), (1, 0)),
    ((8, 9), (3, 2), None, (0, 1)),
    ((4, 4), 5, 1, 2),
    ((2, 3), 3, 1, 1),
]


@pytest.mark.parametrize("dtype,channels_last", FORMATS)
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("dilation", [1, (2, 2), (1, 2)])
@pytest.mark.parametrize("hw,kernel,stride,padding", WINDOWS)
def test_max_pool2d_matches_torch(device, dtype, channels_last, ceil_mode, dilation, hw, kernel,
                                  stride, padding):
    x = distinct((2, 3) + hw, dtype, device, channels_last)
    args = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation,
                ceil_mode=ceil_mode, return_indices=True)
    compare(lambda t: CF.max_pool2d(t, **args), lambda t: F.max_pool2d(t, **args), x, dtype,
            indices=True)


@pytest.mark.parametrize("dtype,channels_last", FORMATS)
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("count_include_pad,divisor_override", [(True, None), (False, None),
                                                                (True, 3), (False, -2)])
@pytest.mark.parametrize("hw,kernel,stride,padding", WINDOWS)
def test_avg_pool2d_matches_torch(device, dtype, channels_last, ceil_mode, count_include_pad,
                                  divisor_override, hw, kernel, stride, padding):
    x = distinct((2, 3) + hw, dtype, device, channels_last)
    args = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                count_include_pad=count_include_pad, divisor_override=divisor_override)
    compare(lambda t: CF.avg_pool2d(t, **args), lambda t: F.avg_pool2d(t, **args), x, dtype)


ADAPTIVE = [((8, 8), 1), ((8, 8), (2, 3)), ((7, 9), (3, 4)), ((5, 5), 7), ((1, 1), 3),
            ((10, 3), (4, None)), ((6, 6), (None, None)), ((9, 7), (9, 7)), ((4, 4), 0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("hw,output_size", ADAPTIVE)
def test_adaptive_pools_match_torch(device, dtype, channels_last, hw, output_size):
    x = distinct((2, 3) + hw, dtype, device, channels_last)
    compare(lambda t: CF.adaptive_avg_pool2d(t, output_size),
            lambda t: F.adaptive_avg_pool2d(t, output_size), x, dtype)
    compare(lambda t: CF.adaptive_max_pool2d(t, output_size, True),
            lambda t: F.adaptive_max_pool2d(t, output_size, True), x, dtype, indices=True)


# ---- shapes: batch 0, batch-less, odd strides of input, many channels --------------------
SHAPES = [(0, 3, 6, 6), (3, 6, 6), (1, 1, 1, 1), (1, 17, 5, 6), (3, 2, 7, 5)]
POOLS = [
    ("max", lambda f, t: f.max_pool2d(t, 3, 2, 1, ceil_mode=True, return_indices=True), True),
    ("avg", lambda f, t: f.avg_pool2d(t, 2, 1, 1, count_include_pad=False), False),
    ("aavg", lambda f, t: f.adaptive_avg_pool2d(t, (2, 3)), False),
    ("amax", lambda f, t: f.adaptive_max_pool2d(t, (3, 2), return_indices=True), True),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name,call,has_indices", POOLS)
def test_pool_shapes(device, shape, name, call, has_indices):
    dtype = torch.float64
    if shape == (1, 1, 1, 1) and name in ("max", "avg"):
        call = {"max": lambda f, t: f.max_pool2d(t, 1, return_indices=True),
                "avg": lambda f, t: f.avg_pool2d(t, 1)}[name]
    x = distinct(shape, dtype, device)
    compare(lambda t: call(CF, t), lambda t: call(F, t), x, dtype, indices=has_indices)
    if x.dim() == 4:
        compare(lambda t: call(CF, t), lambda t: call(F, t),
                x.to(memory_format=torch.channels_last), dtype, indices=has_indices)
    # Non-contiguous (neither NCHW nor NHWC) input.
    wide = distinct(shape[:-1] + (2 * shape[-1],), dtype, device)[..., ::2]
    compare(lambda t: call(CF, t), lambda t: call(F, t), wide, dtype, indices=has_indices)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name,call,has_indices", POOLS)
def test_half_types(device, dtype, name, call, has_indices):
    x = distinct((2, 3, 7, 6), dtype, device)
    compare(lambda t: call(CF, t), lambda t: call(F, t), x, dtype, indices=has_indices)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_integer_dtypes_follow_torch(device, dtype):
    x = torch.randint(-100 if dtype != torch.uint8 else 0, 100, (2, 3, 7, 6), device=device).to(dtype)
    # Ties are common in integers: torch keeps the first maximum, so must we.
    for args in [dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), dict(kernel_size=2)]:
        compare(lambda t: CF.max_pool2d(t, return_indices=True, **args),
                lambda t: F.max_pool2d(t, return_indices=True, **args), x, torch.float64,
                grad=False, indices=True)
    for args in [dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=2, divisor_override=3),
                 dict(kernel_size=3, padding=1, count_include_pad=False, ceil_mode=True)]:
        compare(lambda t: CF.avg_pool2d(t, **args), lambda t: F.avg_pool2d(t, **args), x,
                torch.float64, grad=False)
    for f in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
        compare(lambda t: getattr(CF, f)(t, 2), lambda t: getattr(F, f)(t, 2), x, torch.float64,
                grad=False)


# ---- NaN, -inf, padding-only windows ------------------------------------------------------
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf(device, dtype, channels_last):
    x = distinct((2, 3, 9, 8), dtype, device)
    flat = x.view(-1)
    flat[::7] = float("nan")
    flat[3::11] = float("-inf")
    flat[5::13] = float("inf")
    x[1, 2] = float("-inf")  # a whole plane of -inf: indices must still be valid
    x[0, 1, :4, :4] = float("nan")  # windows with several NaNs
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    for args in [dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                 dict(kernel_size=2, stride=1, dilation=2), dict(kernel_size=(1, 4))]:
        compare(lambda t: CF.max_pool2d(t, return_indices=True, **args),
                lambda t: F.max_pool2d(t, return_indices=True, **args), x, dtype, grad=False,
                indices=True)
    compare(lambda t: CF.adaptive_max_pool2d(t, (4, 3), True),
            lambda t: F.adaptive_max_pool2d(t, (4, 3), True), x, dtype, grad=False, indices=True)
    compare(lambda t: CF.avg_pool2d(t, 3, 2, 1), lambda t: F.avg_pool2d(t, 3, 2, 1), x, dtype,
            grad=False)
    compare(lambda t: CF.adaptive_avg_pool2d(t, 3), lambda t: F.adaptive_avg_pool2d(t, 3), x,
            dtype, grad=False)


# Every ISA path of the CPU loops (CNNEXT_ISA narrows the run-time choice; read per call):
# NCHW float rows take the vector path, whose body and scalar edges must agree with torch on
# NaN (the last NaN of a window wins), -inf and ties (the first maximum wins).
@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_every_isa_path_matches_torch(monkeypatch, isa):
    monkeypatch.setenv("CNNEXT_ISA", isa)
    gen = torch.Generator().manual_seed(7)
    configs = [dict(kernel_size=2, stride=2), dict(kernel_size=3, stride=2, padding=1),
               dict(kernel_size=3, stride=2, ceil_mode=True), dict(kernel_size=3, stride=1, padding=1),
               dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 1))]
    dilated = [dict(kernel_size=2, stride=1, dilation=2), dict(kernel_size=3, stride=2, dilation=(1, 2))]
    for dtype, width, channels_last in itertools.product(DTYPES, [43, 13, 6], [False, True]):
        x = torch.randint(-3, 4, (2, 3, 7, width), generator=gen).to(dtype)  # many ties
        flat = x.view(-1)
        flat[torch.randperm(flat.numel(), generator=gen)[:flat.numel() // 9]] = float("nan")
        flat[torch.randperm(flat.numel(), generator=gen)[:flat.numel() // 9]] = float("-inf")
        x[1, 2] = float("-inf")
        x[0, 1, :3, :9] = float("nan")
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        for args in configs + dilated:
            compare(lambda t: CF.max_pool2d(t, return_indices=True, **args),
                    lambda t: F.max_pool2d(t, return_indices=True, **args), x, dtype, indices=True)
        finite = torch.nan_to_num(x, nan=0.5, neginf=-2.0)  # avg: keep the gradients finite
        for args in configs:
            compare(lambda t: CF.avg_pool2d(t, **args), lambda t: F.avg_pool2d(t, **args),
                    finite, dtype)
        compare(lambda t: CF.avg_pool2d(t, 3, 2, 1, count_include_pad=False),
                lambda t: F.avg_pool2d(t, 3, 2, 1, count_include_pad=False), finite, dtype)


def test_all_minus_inf_gives_valid_indices(device):
    x = torch.full((1, 2, 5, 5), float("-inf"), device=device)
    out, idx = CF.max_pool2d(x, 2, 2, 1, ceil_mode=True, return_indices=True)
    ref, ref_idx = F.max_pool2d(x, 2, 2, 1, ceil_mode=True, return_indices=True)
    assert torch.equal(idx, ref_idx) and bool((idx >= 0).all()) and bool((idx < 25).all())
    assert torch.equal(out, ref)


# ---- backward: overlapping windows accumulate, deterministically ----------------------------
@pytest.mark.parametrize("channels_last", [False, True])
def test_max_backward_overlapping_is_deterministic(device, channels_last):
    x = torch.randn(2, 5, 12, 11, device=device).round()  # many ties, heavy overlap
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    out = CF.max_pool2d(x, 4, 1, 2)
    g = torch.randn_like(out)
    first = torch.autograd.grad(out, x, g, retain_graph=True)[0]
    for _ in range(3):
        assert torch.equal(torch.autograd.grad(out, x, g, retain_graph=True)[0], first)
    ref = torch.autograd.grad(F.max_pool2d(x, 4, 1, 2), x, g)[0]
    assert_close(first, ref)


def test_backward_takes_any_grad_strides(device):
    x = distinct((2, 3, 6, 6), torch.float64, device).requires_grad_()
    for name, call, _ in POOLS:
        out = call(CF, x)
        out = out[0] if isinstance(out, tuple) else out
        ref = call(F, x)
        ref = ref[0] if isinstance(ref, tuple) else ref
        g = torch.ones(1, dtype=x.dtype, device=device).expand_as(out)  # zero strides
        assert_close(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0])


# ---- gradcheck / gradgradcheck ------------------------------------------------------------
GRAD_CASES = [
    ("max", lambda t: CF.max_pool2d(t, 3, 2, 1, ceil_mode=True)),
    ("max_dilated", lambda t: CF.max_pool2d(t, (2, 3), 1, (1, 0), dilation=2)),
    ("avg", lambda t: CF.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False)),
    ("avg_div", lambda t: CF.avg_pool2d(t, (2, 3), 1, (1, 1), divisor_override=5)),
    ("aavg", lambda t: CF.adaptive_avg_pool2d(t, (3, 4))),
    ("amax", lambda t: CF.adaptive_max_pool2d(t, (3, 2))),
]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("name,fn", GRAD_CASES)
def test_gradcheck_and_gradgradcheck(device, name, fn, channels_last):
    x = distinct((1, 2, 6, 5), torch.float64, device, channels_last).requires_grad_()
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


# ---- MaxUnpool2d round trip ---------------------------------------------------------------
@pytest.mark.parametrize("batched", [True, False])
def test_max_unpool_round_trip(device, batched):
    # Positive values, so the zeros MaxUnpool2d fills in never win a re-pooling.
    x = distinct((2, 3, 8, 7) if batched else (3, 8, 7), torch.float32, device) + 1
    pool = CF.max_pool2d(x, 2, 2, return_indices=True)
    ref = F.max_pool2d(x, 2, 2, return_indices=True)
    unpool = torch.nn.MaxUnpool2d(2, 2)
    restored = unpool(*pool, output_size=x.shape[-2:])
    assert torch.equal(restored, unpool(*ref, output_size=x.shape[-2:]))
    # Every kept value sits where it came from; pooling again gives the same result.
    kept = restored != 0
    assert torch.equal(restored[kept], x[kept])
    assert torch.equal(CF.max_pool2d(restored, 2, 2), pool[0])


# ---- Python shape arithmetic agrees with the C++ rules --------------------------------------
def test_fake_shape_arithmetic_matches_kernels():
    for size, k, p, s, d, ceil in itertools.product(range(1, 12), (1, 2, 3, 4), (0, 1, 2),
                                                     (1, 2, 3), (1, 2), (False, True)):
        if p > k // 2:
            continue
        x = torch.zeros(1, 1, size, 1)
        try:
            ref = F.max_pool2d(x, (k, 1), (s, 1), (p, 0), (d, 1), ceil)
        except RuntimeError:
            continue
        expected = pool_output_size(size, k, p, s, d, ceil)
        assert ref.shape[2] == expected
        assert CF.max_pool2d(x, (k, 1), (s, 1), (p, 0), (d, 1), ceil).shape[2] == expected

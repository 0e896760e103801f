"""CUDA kernels against torch (cuDNN / ATen CUDA) and against cnnext's CPU kernels: outputs and
gradients per dtype (tolerances from conftest.TOLERANCES), float64 gradcheck, TF32 on/off,
channels_last, autocast, and bit-identical repeat runs. GPU tests skip with a reason where no GPU
is present; the parts that need none (registrations, autocast on CPU) run everywhere."""
import pytest
import torch
import torch.nn.functional as F

import cnnext
from conftest import TOLERANCES, assert_close

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine")
ops = torch.ops.cnnext


def _has_op(name):
    try:
        getattr(ops, name)
        return True
    except (AttributeError, RuntimeError):
        return False


requires_pool = pytest.mark.skipif(
    not _has_op("max_pool2d"), reason="pooling operator schemas not in this build (csrc/ops.cpp)"
)


# ---- what can be checked without a GPU -------------------------------------------------------
def _has_kernel(op, key):
    return torch._C._dispatch_has_kernel_for_dispatch_key(op, key)


def test_autocast_cuda_kernel_is_registered_for_conv2d():
    assert _has_kernel("cnnext::conv2d", "AutocastCUDA")
    # Backward runs in the dtypes the forward saw: no autocast kernel of its own.
    assert not _has_kernel("cnnext::conv2d_backward", "AutocastCUDA")


def test_cuda_kernels_registered_exactly_when_torch_has_cuda():
    if torch.version.cuda is None:
        assert not _has_kernel("cnnext::conv2d", "CUDA")
        pytest.skip("CPU-only torch: CUDA kernels are not built (checked: none registered)")
    if not _has_kernel("cnnext::conv2d", "CUDA"):
        pytest.skip("torch has CUDA but this build has no CUDA kernels (CNNEXT_NO_CUDA or no nvcc)")
    for op in ("conv2d", "conv2d_backward"):
        assert _has_kernel(f"cnnext::{op}", "CUDA")


def test_autocast_cuda_kernel_redispatches_to_the_device_kernel():
    # Calls the AutocastCUDA kernel itself with CPU tensors: its typed schema lookup and its
    # redispatch below autocast run here; cached_cast leaves non-CUDA tensors as they are.
    x, w, b = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3), torch.randn(4)
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCUDA)
    out = ops.conv2d.default.redispatch(keys, x, w, b, [1, 1], [1, 1], [1, 1], 1)
    assert out.dtype == torch.float32
    assert_close(out, F.conv2d(x, w, b, padding=1))


def test_cpu_autocast_casts_like_torch():
    # cnnext.functional casts under CPU autocast as torch's conv does (bf16 out), computing
    # the CPU kernel in float32; the AutocastCUDA kernel is not involved on the CPU.
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cnnext.functional.conv2d(x, w, padding=1)
        ref = F.conv2d(x, w, padding=1)
    assert out.dtype == ref.dtype == torch.bfloat16
    assert_close(out, ref)


def test_tolerances_cover_every_cuda_dtype():
    for key in (torch.float16, torch.bfloat16, torch.float32, torch.float64, "tf32"):
        assert key in TOLERANCES


# ---- conv2d on CUDA ---------------------------------------------------------------------------
# (batch, cin, h, w, cout, kernel, stride, padding, dilation, groups)
CONV_CASES = {
    "3x3": (2, 8, 9, 11, 16, 3, 1, 1, 1, 1),
    "odd_cin_rect": (2, 3, 10, 7, 5, (3, 2), 2, (1, 0), 1, 1),
    "pointwise": (1, 16, 8, 8, 32, 1, 1, 0, 1, 1),
    "groups_dilated": (2, 16, 12, 12, 16, 3, 2, 2, 2, 4),
    "depthwise": (2, 8, 10, 10, 8, 3, 1, 1, 1, 8),
    "depthwise_mult2": (2, 8, 10, 10, 16, 5, 2, 2, 1, 8),
    "partial_tiles": (3, 32, 17, 13, 70, 3, 1, 1, 1, 1),
    "batch0": (0, 8, 9, 9, 8, 3, 1, 1, 1, 1),
}
# dtype, TF32 on?, tolerance key
CONV_MODES = {
    "float16": (torch.float16, False, torch.float16),
    "bfloat16": (torch.bfloat16, False, torch.bfloat16),
    "float32_tf32": (torch.float32, True, "tf32"),
    "float32_exact": (torch.float32, False, torch.float32),
    "float64": (torch.float64, False, torch.float64),
}


class _tf32:
    def __init__(self, on):
        self.on = on

    def __enter__(self):
        self.saved = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = self.on

    def __exit__(self, *exc):
        torch.backends.cudnn.allow_tf32 = self.saved


def _conv_inputs(case, dtype, channels_last, device="cuda"):
    n, cin, h, w, cout, k, stride, pad, dil, groups = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(n, cin, h, w, device=device).to(dtype)
    wt = (torch.randn(cout, cin // groups, kh, kw, device=device) / (cin // groups * kh * kw) ** 0.5).to(dtype)
    b = torch.randn(cout, device=device).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, wt, b, dict(stride=stride, padding=pad, dilation=dil, groups=groups)


def _fwd_bwd(fn, x, w, b, kw, grad):
    x, w, b = (t.detach().requires_grad_() for t in (x, w, b))
    out = fn(x, w, b, **kw)
    grads = torch.autograd.grad(out, (x, w, b), grad) if out.numel() else (None, None, None)
    return out, grads


@requires_cuda
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("mode", CONV_MODES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_cuda_matches_float64_reference_and_cudnn(case, mode, channels_last):
    dtype, tf32, tol = CONV_MODES[mode]
    x, w, b, kw = _conv_inputs(CONV_CASES[case], dtype, channels_last)
    go = torch.randn(F.conv2d(x.double(), w.double(), None, **kw).shape, device="cuda").to(dtype)
    with _tf32(tf32):
        out, grads = _fwd_bwd(cnnext.functional.conv2d, x, w, b, kw, go)
        cudnn_out, cudnn_grads = _fwd_bwd(F.conv2d, x, w, b, kw, go)
    # The same (rounded) inputs in float64: the exact answer each dtype approximates.
    ref_out, ref_grads = _fwd_bwd(F.conv2d, x.double(), w.double(), b.double(), kw, go.double())
    assert out.dtype == dtype and out.shape == cudnn_out.shape
    if out.numel():  # the layout torch gives: channels_last in, channels_last out (not float64)
        assert out.stride() == cudnn_out.stride(), (out.stride(), cudnn_out.stride())
    assert_close(out.double(), ref_out, dtype=tol)
    assert_close(out, cudnn_out, dtype=tol)
    if out.numel():
        for g, r, c in zip(grads, ref_grads, cudnn_grads):
            # grad_weight/grad_bias sum over every pixel: scale atol with the magnitude.
            scale = max(1.0, r.abs().max().item())
            assert_close(g.double() / scale, r / scale, dtype=tol)
            assert_close(g / scale, c / scale, dtype=tol)


@requires_cuda
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conv2d_cuda_matches_cnnext_cpu(case, dtype):
    x, w, b, kw = _conv_inputs(CONV_CASES[case], dtype, False)
    go = torch.randn(F.conv2d(x, w, b, **kw).shape, device="cuda", dtype=dtype)
    with _tf32(False):
        out, grads = _fwd_bwd(cnnext.functional.conv2d, x, w, b, kw, go)
    cpu_out, cpu_grads = _fwd_bwd(cnnext.functional.conv2d, x.cpu(), w.cpu(), b.cpu(), kw, go.cpu())
    assert_close(out.cpu(), cpu_out)
    if out.numel():
        for g, c in zip(grads, cpu_grads):
            assert_close(g.cpu(), c)


@requires_cuda
@pytest.mark.parametrize("case", ["3x3", "odd_cin_rect", "groups_dilated", "depthwise_mult2"])
def test_conv2d_cuda_gradcheck_float64(case):
    n, cin, h, w, cout, k, stride, pad, dil, groups = CONV_CASES[case]
    small = (1, cin, min(h, 7), min(w, 7), cout, k, stride, pad, dil, groups)
    x, wt, b, kw = _conv_inputs(small, torch.float64, False)
    args = [t.detach().requires_grad_() for t in (x, wt, b)]
    fn = lambda x, w, b: cnnext.functional.conv2d(x, w, b, **kw)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args)
    assert torch.autograd.gradgradcheck(fn, args)


@requires_cuda
def test_conv2d_cuda_same_padding_even_kernel():
    x = torch.randn(2, 8, 9, 10, device="cuda", dtype=torch.float64)
    w = torch.randn(6, 8, 4, 2, device="cuda", dtype=torch.float64)
    assert_close(cnnext.functional.conv2d(x, w, padding="same"), F.conv2d(x, w, padding="same"))


@requires_cuda
def test_tf32_flag_decides_float32_rounding():
    # 1 + 2^-12 is not a TF32 value (10-bit mantissa): TF32 rounds it to 1, FFMA keeps it.
    x = torch.full((1, 8, 4, 4), 1 + 2.0 ** -12, device="cuda")
    w = torch.ones(16, 8, 1, 1, device="cuda")
    exact = torch.full((1, 16, 4, 4), 8 * (1 + 2.0 ** -12), device="cuda")
    with _tf32(False):
        assert torch.equal(cnnext.functional.conv2d(x, w), exact)
    with _tf32(True):
        out = cnnext.functional.conv2d(x, w)
    assert torch.equal(out, torch.full_like(exact, 8.0))


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_cuda_runs_conv2d_in_autocast_dtype(dtype):
    x = torch.randn(2, 16, 10, 10, device="cuda")
    w = torch.randn(32, 16, 3, 3, device="cuda", requires_grad=True)
    b = torch.randn(32, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=dtype):
        out = cnnext.functional.conv2d(x, w, b, padding=1)
        ref = F.conv2d(x, w, b, padding=1)
    assert out.dtype == ref.dtype == dtype
    assert_close(out, ref)
    gw, gb = torch.autograd.grad(out.float().sum(), (w, b))
    rw, rb = torch.autograd.grad(ref.float().sum(), (w, b))
    assert gw.dtype == torch.float32 and gb.dtype == torch.float32  # through the cast to fp32
    scale = rw.abs().max().item()
    assert_close(gw / scale, rw / scale, dtype=dtype)
    # float64 is never autocast, as with torch.
    with torch.autocast("cuda", dtype=dtype):
        assert cnnext.functional.conv2d(x.double(), w.double().detach()).dtype == torch.float64


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("case", ["3x3", "depthwise", "partial_tiles"])
def test_conv2d_cuda_is_bit_identical_run_to_run(case, dtype):
    n, cin, h, w, cout, k, stride, pad, dil, groups = CONV_CASES[case]
    big = (16, cin, h * 3, w * 3, cout, k, stride, pad, dil, groups)  # many split-K slices
    x, wt, b, kw = _conv_inputs(big, dtype, False)
    go = torch.randn(F.conv2d(x, wt, b, **kw).shape, device="cuda").to(dtype)
    first = _fwd_bwd(cnnext.functional.conv2d, x, wt, b, kw, go)
    second = _fwd_bwd(cnnext.functional.conv2d, x, wt, b, kw, go)
    assert torch.equal(first[0], second[0])
    for a, c in zip(first[1], second[1]):
        assert torch.equal(a, c)


@requires_cuda
def test_conv2d_cuda_accepts_expanded_grad_output():
    x = torch.randn(2, 8, 6, 6, device="cuda", requires_grad=True)
    w = torch.randn(4, 8, 3, 3, device="cuda", requires_grad=True)
    with _tf32(False):
        out = cnnext.functional.conv2d(x, w)
        go = torch.ones(1, 1, 1, 1, device="cuda").expand(out.shape)  # zero strides
        got = torch.autograd.grad(out, (x, w), go)
        ref = torch.autograd.grad(F.conv2d(x, w), (x, w), go)
    for g, r in zip(got, ref):
        assert_close(g, r)


# ---- pooling on CUDA ------------------------------------------------------------------------
POOL_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
# (shape, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = {
    "resnet": ((2, 4, 16, 16), 3, 2, 1, 1, False),
    "ceil": ((2, 3, 8, 7), 3, 2, 0, 1, True),
    "dilated": ((1, 3, 11, 9), (3, 2), (2, 1), (1, 1), (2, 3), True),
    "overlap": ((2, 5, 9, 9), 4, 1, 2, 1, False),
}
AVG_CASES = {  # (shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    "plain": ((2, 4, 10, 10), 2, 2, 0, False, True, None),
    "pad_ceil_include": ((2, 3, 9, 8), 3, 2, 1, True, True, None),
    "pad_ceil_exclude": ((2, 3, 9, 8), 3, 2, 1, True, False, None),
    "override": ((1, 3, 7, 7), (3, 2), (2, 1), (1, 1), False, True, 5),
}
ADAPTIVE_CASES = {"down": ((2, 3, 13, 11), (4, 5)), "up": ((1, 2, 3, 5), (7, 6)), "global": ((2, 4, 7, 7), (1, 1))}


def _pool_input(shape, dtype, channels_last, distinct=True):
    n = torch.Size(shape).numel()
    x = torch.randperm(n, device="cuda").reshape(shape).to(torch.float64) / n if distinct else torch.randn(shape, device="cuda")
    x = x.to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _same_layout(out, x):
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() else torch.contiguous_format
    return out.is_contiguous(memory_format=fmt)


@requires_cuda
@requires_pool
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", POOL_DTYPES)
@pytest.mark.parametrize("case", MAX_CASES)
def test_max_pool2d_cuda_matches_torch(case, dtype, channels_last):
    shape, k, s, p, d, ceil = MAX_CASES[case]
    x = _pool_input(shape, dtype, channels_last)
    args = [list(v) if isinstance(v, tuple) else [v, v] for v in (k, s, p, d)]
    out, idx = ops.max_pool2d(x, *args, ceil)
    ref, ref_idx = F.max_pool2d(x, k, s, p, d, ceil_mode=ceil, return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx) and idx.dtype == torch.int64
    assert _same_layout(out, x) and _same_layout(idx, x)
    go = torch.randn(out.shape, device="cuda").to(dtype)
    gi = ops.max_pool2d_backward(go, x, idx, *args, ceil)
    xr = x.detach().requires_grad_()
    (ref_gi,) = torch.autograd.grad(F.max_pool2d(xr, k, s, p, d, ceil_mode=ceil), xr, go)
    assert_close(gi, ref_gi)
    assert _same_layout(gi, x)
    assert torch.equal(gi, ops.max_pool2d_backward(go, x, idx, *args, ceil))  # deterministic
    if dtype in (torch.float32, torch.float64):
        cpu_out, cpu_idx = ops.max_pool2d(x.cpu(), *args, ceil)
        assert torch.equal(out.cpu(), cpu_out) and torch.equal(idx.cpu(), cpu_idx)


@requires_cuda
@requires_pool
def test_max_pool2d_cuda_nan_and_all_neg_inf_windows():
    x = torch.full((1, 1, 4, 4), float("-inf"), device="cuda")
    x[0, 0, 2, 3] = float("nan")
    x[0, 0, 3, 2] = float("nan")
    out, idx = ops.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    ref, ref_idx = F.max_pool2d(x, 2, 2, return_indices=True)
    torch.testing.assert_close(out, ref, equal_nan=True)
    assert torch.equal(idx, ref_idx)


@requires_cuda
@requires_pool
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", POOL_DTYPES)
@pytest.mark.parametrize("case", AVG_CASES)
def test_avg_pool2d_cuda_matches_torch(case, dtype, channels_last):
    shape, k, s, p, ceil, include, div = AVG_CASES[case]
    x = _pool_input(shape, dtype, channels_last, distinct=False)
    args = [list(v) if isinstance(v, tuple) else [v, v] for v in (k, s, p)]
    out = ops.avg_pool2d(x, *args, ceil, include, div)
    ref = F.avg_pool2d(x, k, s, p, ceil, include, div)
    assert_close(out, ref)
    assert _same_layout(out, x)
    go = torch.randn(out.shape, device="cuda").to(dtype)
    gi = ops.avg_pool2d_backward(go, x, *args, ceil, include, div)
    # Reference from torch's NCHW kernel: its channels_last CUDA backward leaves the padding
    # out of the window search (wrong whenever padding > 0).
    xr = x.detach().contiguous().requires_grad_()
    (ref_gi,) = torch.autograd.grad(F.avg_pool2d(xr, k, s, p, ceil, include, div), xr, go)
    assert_close(gi, ref_gi)
    assert _same_layout(gi, x)
    if dtype in (torch.float32, torch.float64):
        assert_close(out.cpu(), ops.avg_pool2d(x.cpu(), *args, ceil, include, div))


@requires_cuda
@requires_pool
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", POOL_DTYPES)
@pytest.mark.parametrize("case", ADAPTIVE_CASES)
def test_adaptive_pools_cuda_match_torch(case, dtype, channels_last):
    shape, size = ADAPTIVE_CASES[case]
    x = _pool_input(shape, dtype, channels_last)
    out = ops.adaptive_avg_pool2d(x, list(size))
    assert_close(out, F.adaptive_avg_pool2d(x, size))
    go = torch.randn(out.shape, device="cuda").to(dtype)
    xr = x.detach().requires_grad_()
    (ref_gi,) = torch.autograd.grad(F.adaptive_avg_pool2d(xr, size), xr, go)
    assert_close(ops.adaptive_avg_pool2d_backward(go, x), ref_gi)
    mout, idx = ops.adaptive_max_pool2d(x, list(size))
    ref, ref_idx = F.adaptive_max_pool2d(x, size, return_indices=True)
    assert torch.equal(mout, ref) and torch.equal(idx, ref_idx)
    assert _same_layout(out, x) and _same_layout(mout, x) and _same_layout(idx, x)
    (ref_mgi,) = torch.autograd.grad(F.adaptive_max_pool2d(xr, size), xr, go)
    assert_close(ops.adaptive_max_pool2d_backward(go, x, idx), ref_mgi)


@requires_cuda
@requires_pool
@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d"])
def test_pool_cuda_gradcheck_float64(name):
    fn = getattr(cnnext.functional, name, None)
    if fn is None:
        pytest.skip(f"cnnext.functional.{name} not in this build")
    x = _pool_input((1, 2, 7, 6), torch.float64, False).requires_grad_()
    kwargs = {"max_pool2d": dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
              "avg_pool2d": dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
              "adaptive_avg_pool2d": dict(output_size=(3, 4)),
              "adaptive_max_pool2d": dict(output_size=(3, 4))}[name]
    assert torch.autograd.gradcheck(lambda t: fn(t, **kwargs), (x,))


POOL_ERROR_CALLS = [  # (functional name, kwargs): bad arguments the CPU op rejects
    ("max_pool2d", dict(kernel_size=0, stride=1)),
    ("max_pool2d", dict(kernel_size=2, stride=0)),
    ("max_pool2d", dict(kernel_size=3, padding=2)),
    ("max_pool2d", dict(kernel_size=3, padding=3, dilation=2)),
    ("max_pool2d", dict(kernel_size=2, dilation=0)),
    ("max_pool2d", dict(kernel_size=9)),
    ("avg_pool2d", dict(kernel_size=(3, 1), padding=1)),
    ("avg_pool2d", dict(kernel_size=2, divisor_override=0)),
    ("avg_pool2d", dict(kernel_size=9)),
    ("adaptive_avg_pool2d", dict(output_size=-1)),
    ("adaptive_max_pool2d", dict(output_size=(1, 2, 3))),
]


@requires_cuda
@requires_pool
@pytest.mark.parametrize("name,kwargs", POOL_ERROR_CALLS, ids=str)
def test_pool_cuda_errors_match_cpu(name, kwargs):
    """Both devices check through csrc/common/pool_shapes.h: same class, same message."""
    fn = getattr(cnnext.functional, name)
    x = torch.randn(1, 2, 8, 8)
    with pytest.raises(Exception) as cpu:
        fn(x, **kwargs)
    with pytest.raises(Exception) as cuda:
        fn(x.cuda(), **kwargs)
    assert type(cuda.value) is type(cpu.value)
    assert str(cuda.value).splitlines()[0] == str(cpu.value).splitlines()[0]


@requires_cuda
@requires_pool
def test_pool_cuda_backward_rejects_mismatched_arguments():
    x = torch.randn(1, 2, 6, 6, device="cuda")
    args = ([2, 2], [2, 2], [0, 0], [1, 1], False)
    out, idx = ops.max_pool2d(x, *args)
    with pytest.raises(RuntimeError, match="grad_output"):
        ops.max_pool2d_backward(torch.randn(1, 2, 4, 4, device="cuda"), x, idx, *args)
    with pytest.raises(RuntimeError, match="grad_output"):
        ops.max_pool2d_backward(out.cpu(), x, idx, *args)
    with pytest.raises(RuntimeError, match="indices"):
        ops.max_pool2d_backward(out, x, idx.int(), *args)
    with pytest.raises(RuntimeError, match="indices"):
        ops.max_pool2d_backward(out, x, idx.cpu(), *args)
    with pytest.raises(RuntimeError, match="grad_output"):
        ops.avg_pool2d_backward(out.double(), x, *args[:3], False, True, None)
    with pytest.raises(RuntimeError, match="grad_output"):
        ops.adaptive_avg_pool2d_backward(out.half(), x)
    with pytest.raises(NotImplementedError, match="max_pool2d"):
        ops.max_pool2d(x.int(), *args)  # the CUDA kernels are floating-point only


# ---- the H200 run script (run by a later session with a GPU) ---------------------------------
def test_h200_run_script_parses_and_its_driver_imports():
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(root, "benchmarks", "gpu", "run_h200.sh")
    proc = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    sys.path.insert(0, os.path.dirname(script))
    try:
        import sanitize_driver
    finally:
        sys.path.pop(0)
    if not HAS_CUDA:
        assert sanitize_driver.main() == 2  # says "no CUDA GPU" instead of failing obscurely
    names = [name for name, _ in sanitize_driver.conv_calls(torch)]
    assert any("depthwise" in n for n in names) and any("float64" in n for n in names)

"""torch.nn.functional-compatible functions backed by the cnnext operators."""
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch._prims_common import suggest_memory_format

from . import _C, _checks
from . import ops as _ops  # noqa: F401  (registers fake kernels and autograd)
from ._args import int_list, integer

_cnnext = torch.ops.cnnext

# Dtypes torch's CPU conv2d accepts that our CPU kernels (float32, float64, bfloat16 and
# float16) do not, and the dtype each is computed in. Integer convs are
# computed in float64 and wrapped back through int64, which reproduces torch's modular integer
# arithmetic exactly while every partial sum stays below 2**53.
_CPU_COMPUTE_DTYPE = {
    torch.uint8: torch.float64,
    torch.int8: torch.float64,
    torch.int16: torch.float64,
    torch.int32: torch.float64,
    torch.int64: torch.float64,
    torch.complex32: torch.complex64,
    torch.complex64: torch.complex64,
    torch.complex128: torch.complex128,
}
_NATIVE = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# torch's dilated CPU conv (slow_conv_dilated) has no variant for these; it raises.
_NO_DILATED_CONV = (torch.uint8, torch.int8, torch.int16, torch.int32)


def _check_tensors(input, weight, bias):
    for name, value in (("input", input), ("weight", weight)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"cnnext.conv2d: {name} must be a Tensor, got {type(value).__name__}")
    if bias is not None and not isinstance(bias, torch.Tensor):
        raise TypeError(f"cnnext.conv2d: bias must be a Tensor or None, got {type(bias).__name__}")


def _same_padding(input, weight, dilation):
    """torch's padding='same': total d*(k-1) per dim, the odd extra on the bottom/right."""
    total = [d * (k - 1) for d, k in zip(dilation, weight.shape[-2:])]
    left = [t // 2 for t in total]
    extra = [t - 2 * l for t, l in zip(total, left)]
    if any(extra):
        # F.pad takes (left, right, top, bottom) for the last two dims.
        input = F.pad(input, [0, extra[1], 0, extra[0]])
    return input, tuple(left)


def _conv_op(input, weight, bias, *params):
    """The conv2d operator, with forward-mode AD (torch.func.jvp, forward_ad) added: custom
    operators have none, and would silently drop tangents. conv2d is linear in each argument:
    d(conv(x, w) + b) = conv(dx, w) + conv(x, dw) + db."""
    if fwAD._current_level < 0:
        return _cnnext.conv2d(input, weight, bias, *params)
    if len(params) > 4:  # the fused ReLU: the linear part's tangent, then torch.relu's rule
        return torch.relu(_conv_op(input, weight, bias, *params[:4]))
    unpacked = [fwAD.unpack_dual(t) if t is not None else (None, None) for t in (input, weight, bias)]
    if all(tangent is None for _, tangent in unpacked):
        return _cnnext.conv2d(input, weight, bias, *params)
    (x, dx), (w, dw), (b, db) = unpacked
    out = _cnnext.conv2d(x, w, b, *params)
    tangent = torch.zeros_like(out)
    if dx is not None:
        tangent = tangent + _cnnext.conv2d(dx, w, None, *params)
    if dw is not None:
        tangent = tangent + _cnnext.conv2d(x, dw, None, *params)
    if db is not None:
        tangent = tangent + db.view(-1, 1, 1)
    return fwAD.make_dual(out, tangent)


def _complex_conv2d(input, weight, bias, *params):
    """Complex convolution from real ones, (a + ib)(c + id) = (ac - bd) + i(ad + bc), as torch
    does; autograd through .real/.imag gives torch's complex gradients."""
    def conv(x, w):
        return _conv_op(x, w, None, *params)

    xr, xi, wr, wi = input.real, input.imag, weight.real, weight.imag
    out = torch.complex(conv(xr, wr) - conv(xi, wi), conv(xr, wi) + conv(xi, wr))
    return out if bias is None else out + bias.view(-1, 1, 1)


def _conv2d_any_dtype(input, weight, bias, *params):
    dtype = input.dtype
    same_dtypes = weight.dtype == dtype and (bias is None or bias.dtype == dtype)
    if dtype in _NATIVE or not same_dtypes or input.device.type != "cpu":
        # Mismatched dtypes and other devices go straight to the operator, which raises
        # torch's error (or, on CUDA, computes the dtype natively).
        return _conv_op(input, weight, bias, *params)
    compute = _CPU_COMPUTE_DTYPE.get(dtype)
    if compute is None:
        raise NotImplementedError(f"cnnext.conv2d: \"conv2d\" not implemented for '{dtype}'")
    dilation = params[2]
    if dtype in _NO_DILATED_CONV and any(d != 1 for d in dilation):
        raise NotImplementedError(
            f"cnnext.conv2d: dilated conv2d (dilation={list(dilation)}) not implemented for "
            f"'{dtype}' (torch's CPU kernel has no such variant)"
        )
    input, weight = input.to(compute), weight.to(compute)
    bias = bias.to(compute) if bias is not None else None
    if compute.is_complex:
        out = _complex_conv2d(input, weight, bias, *params)
    else:
        out = _conv_op(input, weight, bias, *params)
    if not dtype.is_floating_point and not dtype.is_complex:
        out = out.round().to(torch.int64)  # exact integers; the cast below wraps like torch
    return out.to(dtype)


def _autocast(*tensors):
    """torch.autocast runs conv2d in its lower-precision dtype: floating tensors other than
    float64 are cast to it (our operators are not on autocast's lists, so it is done here)."""
    device = tensors[0].device.type
    if device not in ("cpu", "cuda") or not torch.is_autocast_enabled(device):
        return tensors
    target = torch.get_autocast_dtype(device)
    return tuple(
        t.to(target) if t is not None and t.is_floating_point() and t.dtype != torch.float64 else t
        for t in tensors
    )


def _channels_last(t):
    """t in the channels_last layout torch's kernels give, strides of size-1 dims included."""
    n, c, h, w = t.shape
    if t.numel() == 0 or t.stride() == (c * h * w, 1, w * c, c):
        return t
    return t.clone(memory_format=torch.channels_last)


# ---- the fast path: what most calls are, with the least Python work -----------------------
_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)
_AUTOCAST_DEVICE = {"cpu": "cpu", "cuda": "cuda"}


def _int_pair(value):
    """int or 2-sequence of ints as a pair; None for anything the general path must parse."""
    kind = type(value)
    if kind is int:
        return (value, value)
    if (kind is tuple or kind is list) and len(value) == 2 and type(value[0]) is int and (
        type(value[1]) is int
    ):
        return value
    return None


def _plain(t, dtype):
    """A tensor the operators take as it is: NCHW-contiguous strides (so no layout rule
    applies to the output), the given native dtype, no subclass."""
    if type(t) not in _TENSOR_TYPES or t.dtype is not dtype or t.dim() != 4:
        return False
    _, c, h, w = t.shape
    return t.stride()[1:] == (h * w, w, 1) and c != 0


def _channels_last_cpu(t, dtype):
    """A channels_last CPU tensor the conv operator takes as it is. With a channels_last
    input (and a weight in either layout) the output and grad_input come back channels_last,
    as torch's do (both follow the input's suggest_memory_format), so no layout rule is left
    for Python; an NCHW input with a channels_last weight still needs it."""
    if type(t) not in _TENSOR_TYPES or t.dtype is not dtype or t.dim() != 4 or not t.is_cpu:
        return False
    return t.shape[1] != 0 and t.is_contiguous(memory_format=torch.channels_last)


def _channels_last_strides(t):
    """Whether t's strides are exactly channels_last's, so its suggested memory format (the
    operator's output layout) is channels_last even where its sizes also make it
    NCHW-contiguous."""
    n, c, h, w = t.shape
    return t.stride() == (h * w * c, 1, w * c, c)


def _needs_autograd(*tensors):
    """Whether the call must go through the operators' autograd (their C++ autograd kernels,
    csrc/autograd_*.cpp, still cost a dispatch); below it when nothing can record a graph."""
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return True
    if fwAD._current_level >= 0:
        return True
    if not torch.is_grad_enabled():
        return False
    return any(t is not None and t.requires_grad for t in tensors)


# The fast paths' operators and their direct entry points (csrc/python_fast_calls.cpp: one
# pybind11 call into the dispatcher, about 3 us less than torch.ops' boxed call).
_FAST_CALLS = {
    _cnnext.conv2d.default: _C.conv2d_fast,
    _cnnext.max_pool2d.default: _C.max_pool2d_fast,
    _cnnext.max_pool2d_values.default: _C.max_pool2d_values_fast,
    _cnnext.avg_pool2d.default: _C.avg_pool2d_fast,
    _cnnext.adaptive_avg_pool2d.default: _C.adaptive_avg_pool2d_fast,
}


def _fast_call(op, needs_autograd, *args):
    if not needs_autograd:
        return _FAST_CALLS[op](False, *args)
    # torch.compile and functorch trace torch.ops calls only; forward AD has its own path.
    if (torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()
            or fwAD._current_level >= 0):
        return op(*args)
    return _FAST_CALLS[op](True, *args)


def _fast_device(t):
    """The autocast device of t when autocast is off for it, else None (the general path)."""
    device = "cpu" if t.is_cpu else ("cuda" if t.is_cuda else None)
    if device is None or torch.is_autocast_enabled(device):
        return None
    return device


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, _relu=False):
    """Same signature and semantics as torch.nn.functional.conv2d. The private _relu=True
    applies torch.relu inside the operator (the fused conv of cnnext.convert(fuse=True))."""
    # Fast path: plain float tensors (NCHW, or channels_last on the CPU), int arguments, no
    # forward AD, autocast or layout rule.
    dtype = getattr(input, "dtype", None)
    if (
        not _relu
        and dtype in _NATIVE
        and type(groups) is int
        and (
            _plain(input, dtype) and _plain(weight, dtype)
            or _channels_last_cpu(input, dtype)
            and (
                _plain(weight, dtype)
                # A channels_last weight makes torch's output channels_last: the operator's
                # is too where the input suggests channels_last itself (its strides are
                # channels_last's exactly, as .to(memory_format=) gives an SE block's
                # N x C x 1 x 1, or it is not NCHW-contiguous at all).
                or _channels_last_cpu(weight, dtype)
                and (not input.is_contiguous() or _channels_last_strides(input))
            )
        )
        and (bias is None or (type(bias) in _TENSOR_TYPES and bias.dtype is dtype))
        and fwAD._current_level < 0
        and _fast_device(input) is not None
    ):
        stride_, padding_, dilation_ = _int_pair(stride), _int_pair(padding), _int_pair(dilation)
        if stride_ is not None and padding_ is not None and dilation_ is not None:
            return _fast_call(
                _cnnext.conv2d.default, _needs_autograd(input, weight, bias),
                input, weight, bias, stride_, padding_, dilation_, groups,
            )
    return _conv2d_general(input, weight, bias, stride, padding, dilation, groups, _relu)


def _conv2d_general(input, weight, bias, stride, padding, dilation, groups, relu=False):
    """Every other call, with torch's checks in torch's order (cnnext/_checks.py)."""
    # torch's argument parser rejects wrong types before any other check.
    _check_tensors(input, weight, bias)
    if relu and not input.is_floating_point():  # integer and complex: torch.relu's own rules
        return torch.relu(_conv2d_general(input, weight, bias, stride, padding, dilation, groups))
    stride = int_list(stride, "stride")
    dilation = int_list(dilation, "dilation")
    groups = integer(groups, "groups")
    padding_string = padding if isinstance(padding, str) else None
    if padding_string is None:
        padding = int_list(padding, "padding")
        _checks.conv2d_bias_dtype(input, bias)
    unbatched = _checks.conv2d_batchify(input)
    if unbatched:
        input = input.unsqueeze(0)
    in_format = suggest_memory_format(input)
    if padding_string == "same":
        dilation = _checks.conv2d_same(input, weight, stride, dilation, groups)
        input, padding = _same_padding(input, weight, dilation)
    elif padding_string == "valid":
        padding = (0,)
    elif padding_string is not None:
        raise _checks.invalid_padding_string(padding_string)
    stride, padding, dilation = _checks.conv2d_convolution(
        input, weight, stride, padding, dilation, groups
    )

    input, weight, bias = _autocast(input, weight, bias)
    flag = (True,) if relu else ()  # the operator's trailing flag, passed only when set
    out = _conv2d_any_dtype(input, weight, bias, stride, padding, dilation, groups, *flag)
    if input.shape[1] == 0:
        # torch gives a zero-channel output when the input has no channels (its "empty"
        # convolution path), whatever the weight's out_channels.
        out = out[:, :0].clone(memory_format=torch.contiguous_format)
    elif torch.channels_last in (in_format, suggest_memory_format(weight)) and not (
        out.is_cuda and torch.float64 in (input.dtype, weight.dtype)
    ):
        # torch's conv2d returns channels_last when the input or the weight is; on CUDA not in
        # float64 (cuDNN's cudnn_conv_suggest_memory_format disables NHWC for double).
        out = _channels_last(out)
    return out.squeeze(0) if unbatched else out


# ---- pooling ------------------------------------------------------------------------------
_POOL_NATIVE = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _plain_pool_input(input):
    """A 4-D floating tensor on a device with native kernels: the operators take it as it is
    (they check the rest, in torch's order, and keep its layout)."""
    dtype = getattr(input, "dtype", None)
    return (
        dtype in _POOL_NATIVE
        and type(input) in _TENSOR_TYPES
        and input.dim() == 4
        and (input.is_cpu or input.is_cuda)
    )


# torch's wording for a window argument of the wrong length (Pooling.cpp's meta functions).
_POOL_LENGTH_RULE = {
    "kernel_size": "must either be a single int, or a tuple of two ints",
    "stride": "must either be omitted, a single int, or a tuple of two ints",
    "padding": "must either be a single int, or a tuple of two ints",
    "dilation": "must be either a single int, or a tuple of two ints",
}


def _pool_pair(value, name, op):
    """torch's pooling arguments: an int or a tuple of one or two ints."""
    if isinstance(value, (int, torch.SymInt)) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list, torch.Size)) and all(
        isinstance(v, (int, torch.SymInt)) and not isinstance(v, bool) for v in value
    ):
        if len(value) == 1:
            return (value[0], value[0])
        if len(value) == 2:
            return tuple(value)
        raise RuntimeError(
            f"cnnext.{op}: {name} {_POOL_LENGTH_RULE[name]}, but got {name}={list(value)}"
        )
    raise TypeError(f"cnnext.{op}: {name} must be an int or a tuple of ints, got {value!r}")


def _pool_stride(stride, kernel_size, op):
    """stride=None (or an empty list) means stride = kernel_size."""
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        return kernel_size
    return _pool_pair(stride, "stride", op)


def _pool_input(input, op, max_like, run_checks):
    """Checks rank (and, for batch-less input, the sizes torch checks before batching) in
    torch's order: run_checks(stand_in) makes the operator's window checks where torch makes
    them before these; returns (input as 4-D, unbatched). Every dtype reaches its kernel as it
    is (the CPU and CUDA kernels take float16 and bfloat16)."""
    if input.dim() not in (3, 4):
        if max_like:
            raise RuntimeError(
                f"cnnext.{op}: non-empty 3D or 4D (batch mode) tensor expected for input, "
                f"but got input of size: {list(input.shape)}"
            )
        if input.dim() < 3:  # torch indexes size(-3) first
            raise IndexError(
                f"cnnext.{op}: Dimension out of range (expected to be in range of "
                f"[-{max(input.dim(), 1)}, {max(input.dim(), 1) - 1}], but got -3)"
            )
        _checks.raise_pool_sizes_error(op, input, run_checks)
    unbatched = input.dim() == 3
    if unbatched:
        if input.shape[0] == 0 or input.shape[1] == 0 or input.shape[2] == 0:
            _checks.raise_pool_sizes_error(op, input, run_checks)
        input = input.unsqueeze(0)
    return input, unbatched


def _pool_output(out, unbatched):
    return out.squeeze(0) if unbatched else out


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Same signature and semantics as torch.nn.functional.max_pool2d (and
    max_pool2d_with_indices when return_indices=True)."""
    if _plain_pool_input(input) and type(ceil_mode) is bool:
        kernel = _int_pair(kernel_size)
        stride_ = kernel if stride is None else _int_pair(stride)
        padding_, dilation_ = _int_pair(padding), _int_pair(dilation)
        if kernel is not None and stride_ is not None and padding_ is not None and dilation_ is not None:
            needs_autograd = _needs_autograd(input)
            # Without return_indices the values operator runs; when a gradient can flow its
            # autograd records the maxima's positions itself (csrc/autograd_pool.cpp).
            if not return_indices:
                return _fast_call(_cnnext.max_pool2d_values.default, needs_autograd, input, kernel,
                                  stride_, padding_, dilation_, ceil_mode)
            out, indices = _fast_call(_cnnext.max_pool2d.default, needs_autograd,
                                      input, kernel, stride_, padding_, dilation_, ceil_mode)
            return (out, indices) if return_indices else out
    op = "max_pool2d"
    kernel_size = _pool_pair(kernel_size, "kernel_size", op)
    stride = _pool_stride(stride, kernel_size, op)
    padding = _pool_pair(padding, "padding", op)
    dilation = _pool_pair(dilation, "dilation", op)
    ceil_mode = bool(ceil_mode)
    x, unbatched = _pool_input(input, op, True, lambda t: _cnnext.max_pool2d(
        t, kernel_size, stride, padding, dilation, ceil_mode))
    if not return_indices:
        out = _cnnext.max_pool2d_values(x, kernel_size, stride, padding, dilation, ceil_mode)
        return _pool_output(out, unbatched)
    out, indices = _cnnext.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
    out = _pool_output(out, unbatched)
    if return_indices:
        return out, (indices.squeeze(0) if unbatched else indices)
    return out


def max_pool2d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1,
                            ceil_mode=False, return_indices=True):
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """Same signature and semantics as torch.nn.functional.avg_pool2d."""
    if (_plain_pool_input(input) and type(ceil_mode) is bool and type(count_include_pad) is bool
            and (divisor_override is None or type(divisor_override) is int)):
        kernel = _int_pair(kernel_size)
        stride_ = kernel if stride is None else _int_pair(stride)
        padding_ = _int_pair(padding)
        if kernel is not None and stride_ is not None and padding_ is not None:
            return _fast_call(_cnnext.avg_pool2d.default, _needs_autograd(input), input, kernel,
                              stride_, padding_, ceil_mode, count_include_pad, divisor_override)
    op = "avg_pool2d"
    kernel_size = _pool_pair(kernel_size, "kernel_size", op)
    stride = _pool_stride(stride, kernel_size, op)
    padding = _pool_pair(padding, "padding", op)
    args = (kernel_size, stride, padding, bool(ceil_mode), bool(count_include_pad), divisor_override)
    if input.dim() < 3 and divisor_override == 0:  # torch checks the divisor before the rank
        _cnnext.avg_pool2d(input.new_empty((0, 1, 1, 1)), *args)
    x, unbatched = _pool_input(input, op, False, lambda t: _cnnext.avg_pool2d(t, *args))
    out = _cnnext.avg_pool2d(x, *args)
    return _pool_output(out, unbatched)


def _adaptive_output_size(output_size, input, op):
    """int -> (v, v); None entries take the input's size (torch's _list_with_default)."""
    if isinstance(output_size, (int, torch.SymInt)) and not isinstance(output_size, bool):
        return (output_size, output_size)
    if not isinstance(output_size, (tuple, list, torch.Size)):
        raise TypeError(
            f"cnnext.{op}: output_size must be an int or a tuple of 2 ints or None, "
            f"got {output_size!r}"
        )
    if input.dim() <= len(output_size):
        raise ValueError(f"cnnext.{op}: Input dimension should be at least {len(output_size) + 1}")
    # A length other than 2 is the operator's error, raised in torch's order.
    defaults = input.shape[input.dim() - len(output_size):]
    return tuple(d if v is None else v for v, d in zip(output_size, defaults))


def _adaptive_input(input, op, output_size):
    if input.dim() not in (3, 4):
        colon = ":" if op == "adaptive_max_pool2d" else ""
        raise RuntimeError(
            f"cnnext.{op}(): Expected 3D or 4D tensor, but got{colon} {list(input.shape)}"
        )
    unbatched = input.dim() == 3
    if unbatched:
        # The operator sees a batch of one; torch names the dimension of the 3-D input.
        for dim in (1, 2):
            if input.shape[dim] == 0:
                raise RuntimeError(
                    f"cnnext.{op}(): Expected input to have non-zero size for non-batch "
                    f"dimensions, but input has sizes {list(input.shape)} with dimension {dim} "
                    "being empty"
                )
    return (input.unsqueeze(0) if unbatched else input), unbatched, output_size


def adaptive_avg_pool2d(input, output_size):
    """Same signature and semantics as torch.nn.functional.adaptive_avg_pool2d."""
    if _plain_pool_input(input):
        size = _int_pair(output_size)
        if size is not None and input.numel() != 0:
            return _fast_call(_cnnext.adaptive_avg_pool2d.default, _needs_autograd(input), input, size)
    op = "adaptive_avg_pool2d"
    size = _adaptive_output_size(output_size, input, op)
    if input.dim() not in (3, 4) or 0 in input.shape[-2:]:
        # torch checks output_size before the input (the operator's checks on a stand-in
        # raise those errors), and computes a 1x1 output as a mean over any rank.
        _cnnext.adaptive_avg_pool2d(input.new_empty((0, 1, 1, 1), dtype=torch.float32), size)
        if tuple(size) == (1, 1):
            return input.mean((-2, -1), keepdim=True)
    x, unbatched, size = _adaptive_input(input, op, size)
    return _pool_output(_cnnext.adaptive_avg_pool2d(x, size), unbatched)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Same signature and semantics as torch.nn.functional.adaptive_max_pool2d."""
    op = "adaptive_max_pool2d"
    size = _adaptive_output_size(output_size, input, op)
    x, unbatched, size = _adaptive_input(input, op, size)
    if unbatched and len(size) == 2 and min(size) < 0:
        # torch's allocation error, with the 3-D output shape torch would allocate
        raise RuntimeError(
            f"cnnext.{op}: Trying to create tensor with negative dimension "
            f"{next(v for v in size if v < 0)}: "
            f"[{input.shape[0]}, {size[0]}, {size[1]}]"
        )
    if unbatched and x.shape[1] == 0 and len(size) == 2:
        # torch checks only H and W of a batch-less input; the batched op would reject C = 0.
        out = x.new_empty((0, size[0], size[1]))
        idx = x.new_empty((0, size[0], size[1]), dtype=torch.int64)
        return (out, idx) if return_indices else out
    out, indices = _cnnext.adaptive_max_pool2d(x, size)
    out = _pool_output(out, unbatched)
    if return_indices:
        return out, (indices.squeeze(0) if unbatched else indices)
    return out


def adaptive_max_pool2d_with_indices(input, output_size, return_indices=True):
    return adaptive_max_pool2d(input, output_size, True)

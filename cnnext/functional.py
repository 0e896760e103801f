"""torch.nn.functional-compatible functions backed by the cnnext operators."""
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch._prims_common import suggest_memory_format

from . import ops as _ops  # noqa: F401  (registers fake kernels and autograd)
from ._args import integer, pair

_cnnext = torch.ops.cnnext

# Dtypes torch's CPU conv2d accepts that our CPU kernels (float32/float64) do not, and the
# dtype each is computed in. Half types accumulate in float32 as torch does. Integer convs are
# computed in float64 and wrapped back through int64, which reproduces torch's modular integer
# arithmetic exactly while every partial sum stays below 2**53.
_CPU_COMPUTE_DTYPE = {
    torch.float16: torch.float32,
    torch.bfloat16: torch.float32,
    torch.uint8: torch.float64,
    torch.int8: torch.float64,
    torch.int16: torch.float64,
    torch.int32: torch.float64,
    torch.int64: torch.float64,
    torch.complex32: torch.complex64,
    torch.complex64: torch.complex64,
    torch.complex128: torch.complex128,
}
_NATIVE = (torch.float32, torch.float64)
# torch's dilated CPU conv (slow_conv_dilated) has no variant for these; it raises.
_NO_DILATED_CONV = (torch.uint8, torch.int8, torch.int16, torch.int32)


def _batched(input, op, dims=3):
    if input.dim() not in (dims, dims + 1):
        raise RuntimeError(
            f"cnnext.{op}: Expected {dims}D (unbatched) or {dims + 1}D (batched) input to {op}, "
            f"but got input of size: {list(input.shape)}"
        )
    return input.dim() == dims


def _check_tensors(input, weight, bias):
    for name, value in (("input", input), ("weight", weight)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"cnnext.conv2d: {name} must be a Tensor, got {type(value).__name__}")
    if bias is not None and not isinstance(bias, torch.Tensor):
        raise TypeError(f"cnnext.conv2d: bias must be a Tensor or None, got {type(bias).__name__}")


def _same_padding(input, weight, stride, dilation):
    """torch's padding='same': total d*(k-1) per dim, the odd extra on the bottom/right."""
    if any(s != 1 for s in stride):
        raise RuntimeError(
            "cnnext.conv2d: padding='same' is not supported for strided convolutions "
            f"(stride={list(stride)})"
        )
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


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Same signature and semantics as torch.nn.functional.conv2d."""
    _check_tensors(input, weight, bias)
    unbatched = _batched(input, "conv2d")
    if weight.dim() != 4:
        raise RuntimeError(
            f"cnnext.conv2d: expected weight to be 4-dimensional, but got weight of size "
            f"{list(weight.shape)}"
        )
    stride = pair(stride, "stride")
    dilation = pair(dilation, "dilation")
    groups = integer(groups, "groups")
    if unbatched:
        input = input.unsqueeze(0)
    in_format = suggest_memory_format(input)
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            input, padding = _same_padding(input, weight, stride, dilation)
        else:
            raise RuntimeError(f"cnnext.conv2d: Invalid padding string: '{padding}'")
    else:
        padding = pair(padding, "padding")

    input, weight, bias = _autocast(input, weight, bias)
    out = _conv2d_any_dtype(input, weight, bias, stride, padding, dilation, groups)
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
# Every dtype reaches its kernel as it is (the CPU and CUDA kernels take float16 and bfloat16).
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
            f"cnnext.{op}: {name} must either be a single int, or a tuple of two ints, "
            f"but got {name}={list(value)}"
        )
    raise TypeError(f"cnnext.{op}: {name} must be an int or a tuple of ints, got {value!r}")


def _pool_stride(stride, kernel_size, op):
    """stride=None (or an empty list) means stride = kernel_size."""
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        return kernel_size
    return _pool_pair(stride, "stride", op)


def _pool_input(input, op, max_like):
    """Checks rank (and, for batch-less input, the sizes torch checks before batching);
    returns (input as 4-D, unbatched)."""
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
        raise RuntimeError(
            f"cnnext.{op}: Expected 3D or 4D (batch mode) tensor with optional 0 dim batch "
            f"size for input, but got:{list(input.shape)}"
        )
    unbatched = input.dim() == 3
    if unbatched:
        if input.shape[0] == 0 or input.shape[1] == 0 or input.shape[2] == 0:
            raise RuntimeError(
                f"cnnext.{op}: Expected 3D or 4D (batch mode) tensor with optional 0 dim batch "
                f"size for input, but got:{list(input.shape)}"
            )
        input = input.unsqueeze(0)
    return input, unbatched


def _pool_output(out, unbatched):
    return out.squeeze(0) if unbatched else out


def _needs_no_grad(input):
    """No gradient can flow to input: max pooling may skip its indices."""
    return not (torch.is_grad_enabled() and input.requires_grad)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Same signature and semantics as torch.nn.functional.max_pool2d (and
    max_pool2d_with_indices when return_indices=True)."""
    op = "max_pool2d"
    kernel_size = _pool_pair(kernel_size, "kernel_size", op)
    stride = _pool_stride(stride, kernel_size, op)
    padding = _pool_pair(padding, "padding", op)
    dilation = _pool_pair(dilation, "dilation", op)
    x, unbatched = _pool_input(input, op, max_like=True)
    if not return_indices and _needs_no_grad(x):
        out = _cnnext.max_pool2d_values(x, kernel_size, stride, padding, dilation, bool(ceil_mode))
        return _pool_output(out, unbatched)
    out, indices = _cnnext.max_pool2d(x, kernel_size, stride, padding, dilation, bool(ceil_mode))
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
    op = "avg_pool2d"
    kernel_size = _pool_pair(kernel_size, "kernel_size", op)
    stride = _pool_stride(stride, kernel_size, op)
    padding = _pool_pair(padding, "padding", op)
    x, unbatched = _pool_input(input, op, max_like=False)
    out = _cnnext.avg_pool2d(
        x, kernel_size, stride, padding, bool(ceil_mode), bool(count_include_pad), divisor_override
    )
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
    if len(output_size) != 2:
        if input.dim() <= len(output_size):
            raise ValueError(f"cnnext.{op}: Input dimension should be at least {len(output_size) + 1}")
        raise RuntimeError(f"cnnext.{op}: output_size must be 2, but got output_size={list(output_size)}")
    if input.dim() < 3:
        raise ValueError(f"cnnext.{op}: Input dimension should be at least 3")
    return tuple(input.shape[-2 + i] if v is None else v for i, v in enumerate(output_size))


def _adaptive_input(input, op, output_size):
    output_size = _adaptive_output_size(output_size, input, op)
    if input.dim() not in (3, 4):
        colon = ":" if op == "adaptive_max_pool2d" else ""
        raise RuntimeError(
            f"cnnext.{op}(): Expected 3D or 4D tensor, but got{colon} {list(input.shape)}"
        )
    unbatched = input.dim() == 3
    return (input.unsqueeze(0) if unbatched else input), unbatched, output_size


def adaptive_avg_pool2d(input, output_size):
    """Same signature and semantics as torch.nn.functional.adaptive_avg_pool2d."""
    x, unbatched, size = _adaptive_input(input, "adaptive_avg_pool2d", output_size)
    return _pool_output(_cnnext.adaptive_avg_pool2d(x, size), unbatched)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Same signature and semantics as torch.nn.functional.adaptive_max_pool2d."""
    op = "adaptive_max_pool2d"
    x, unbatched, size = _adaptive_input(input, op, output_size)
    if unbatched and x.shape[1] == 0:
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

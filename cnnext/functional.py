"""torch.nn.functional-compatible functions backed by the cnnext operators."""
import torch
import torch.nn.functional as F

from . import ops as _ops  # noqa: F401  (registers fake kernels and autograd)
from ._args import pair

_cnnext = torch.ops.cnnext

# Dtypes computed in float32 on the CPU (torch supports them there; our CPU kernels are
# float32/float64), cast back after.
_CPU_UPCAST = (torch.float16, torch.bfloat16)


def _batched(input, op, dims=3):
    if input.dim() not in (dims, dims + 1):
        raise RuntimeError(
            f"cnnext.{op}: Expected {dims}D (unbatched) or {dims + 1}D (batched) input to {op}, "
            f"but got input of size: {list(input.shape)}"
        )
    return input.dim() == dims


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


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Same signature and semantics as torch.nn.functional.conv2d."""
    unbatched = _batched(input, "conv2d")
    if weight.dim() != 4:
        raise RuntimeError(
            f"cnnext.conv2d: expected weight to be 4-dimensional, but got weight of size "
            f"{list(weight.shape)}"
        )
    stride = pair(stride, "stride")
    dilation = pair(dilation, "dilation")
    if unbatched:
        input = input.unsqueeze(0)
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            input, padding = _same_padding(input, weight, stride, dilation)
        else:
            raise RuntimeError(f"cnnext.conv2d: Invalid padding string: '{padding}'")
    else:
        padding = pair(padding, "padding")
    if not isinstance(groups, int) or isinstance(groups, bool):
        raise TypeError(f"cnnext.conv2d: groups must be an int, got {groups!r}")

    dtype = input.dtype
    upcast = (
        input.device.type == "cpu"
        and dtype in _CPU_UPCAST
        and weight.dtype == dtype
        and (bias is None or bias.dtype == dtype)
    )
    if upcast:
        input, weight = input.float(), weight.float()
        bias = bias.float() if bias is not None else None
    out = _cnnext.conv2d(input, weight, bias, stride, padding, dilation, groups)
    if upcast:
        out = out.to(dtype)
    return out.squeeze(0) if unbatched else out

"""Fake kernels and autograd for the C++ operators in csrc/ops.cpp.

Every backward is built from cnnext operators that have autograd of their own, so double
backward (and higher) works and torch.compile sees no Python-side kernels.
"""
import torch

from . import _C  # noqa: F401  (loads the library; the operators register themselves)
from ._shapes import conv_output_size

ops = torch.ops.cnnext


# ---- conv2d -------------------------------------------------------------------------------
@torch.library.register_fake("cnnext::conv2d")
def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups):
    torch._check(input.dim() == 4, lambda: "cnnext.conv2d: expected 4D input")
    torch._check(weight.dim() == 4, lambda: "cnnext.conv2d: expected 4D weight")
    # The checks torch.compile needs before sizes are formed (the real kernel checks the rest
    # with csrc/common/conv_shapes.h); same messages as there.
    for name, values, low in (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)):
        for v in values:
            torch._check(v >= low, lambda name=name, values=values: (
                f"cnnext.conv2d: {'negative' if name == 'padding' else 'non-positive'} {name} "
                f"is not supported ({name}={list(values)})"))
    n, _, h, w = input.shape
    for i, size in enumerate((h, w)):
        torch._check(
            size + 2 * padding[i] >= dilation[i] * (weight.shape[2 + i] - 1) + 1,
            lambda: "cnnext.conv2d: Kernel size can't be greater than actual input size "
            f"(input {list(input.shape)}, weight {list(weight.shape)}, padding={list(padding)}, "
            f"dilation={list(dilation)})",
        )
    out_h = conv_output_size(h, weight.shape[2], stride[0], padding[0], dilation[0])
    out_w = conv_output_size(w, weight.shape[3], stride[1], padding[1], dilation[1])
    return input.new_empty((n, weight.shape[0], out_h, out_w))


@torch.library.register_fake("cnnext::conv2d_backward")
def _conv2d_backward_fake(grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    grad_input = input.new_empty(input.shape if output_mask[0] else (0,))
    grad_weight = weight.new_empty(weight.shape if output_mask[1] else (0,))
    grad_bias = weight.new_empty((weight.shape[0],) if output_mask[2] else (0,))
    return grad_input, grad_weight, grad_bias


def _conv2d_setup_context(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(input, weight)
    ctx.params = (stride, padding, dilation, groups)
    ctx.has_bias = bias is not None


def _conv2d_backward(ctx, grad_output):
    input, weight = ctx.saved_tensors
    mask = [
        ctx.needs_input_grad[0],
        ctx.needs_input_grad[1],
        ctx.has_bias and ctx.needs_input_grad[2],
    ]
    if not any(mask):
        return None, None, None, None, None, None, None
    grad_input, grad_weight, grad_bias = ops.conv2d_backward(
        grad_output, input, weight, *ctx.params, mask
    )
    return (
        grad_input if mask[0] else None,
        grad_weight if mask[1] else None,
        grad_bias if mask[2] else None,
        None,
        None,
        None,
        None,
    )


torch.library.register_autograd(
    "cnnext::conv2d", _conv2d_backward, setup_context=_conv2d_setup_context
)


def _conv2d_backward_setup_context(ctx, inputs, output):
    grad_output, input, weight, stride, padding, dilation, groups, output_mask = inputs
    ctx.save_for_backward(grad_output, input, weight)
    ctx.params = (stride, padding, dilation, groups)
    ctx.output_mask = list(output_mask)


def _conv2d_backward_backward(ctx, gg_input, gg_weight, gg_bias):
    # conv2d_backward is linear in grad_output and bilinear in (grad_output, input|weight):
    #   grad_input  = conv_transpose(grad_output, weight)
    #   grad_weight = correlate(input, grad_output)
    #   grad_bias   = sum(grad_output)
    grad_output, input, weight = ctx.saved_tensors
    params = ctx.params
    mask = ctx.output_mask
    use_gi = mask[0] and gg_input is not None
    use_gw = mask[1] and gg_weight is not None
    use_gb = mask[2] and gg_bias is not None

    d_grad_output = None
    if ctx.needs_input_grad[0]:
        d_grad_output = torch.zeros_like(grad_output)
        if use_gi:
            d_grad_output = d_grad_output + ops.conv2d(gg_input, weight, None, *params)
        if use_gw:
            d_grad_output = d_grad_output + ops.conv2d(input, gg_weight, None, *params)
        if use_gb:
            d_grad_output = d_grad_output + gg_bias.view(1, -1, 1, 1)
    d_input = None
    if ctx.needs_input_grad[1] and use_gw:
        d_input = ops.conv2d_backward(grad_output, input, gg_weight, *params, [True, False, False])[0]
    d_weight = None
    if ctx.needs_input_grad[2] and use_gi:
        d_weight = ops.conv2d_backward(grad_output, gg_input, weight, *params, [False, True, False])[1]
    return d_grad_output, d_input, d_weight, None, None, None, None, None


torch.library.register_autograd(
    "cnnext::conv2d_backward",
    _conv2d_backward_backward,
    setup_context=_conv2d_backward_setup_context,
)


# ---- gemm (tests and benchmarks only; not differentiable) ----------------------------------
@torch.library.register_fake("cnnext::gemm")
def _gemm_fake(a, b, trans_a, trans_b, alpha, beta, c, isa):
    m = a.shape[1] if trans_a else a.shape[0]
    n = b.shape[0] if trans_b else b.shape[1]
    return a.new_empty((m, n))

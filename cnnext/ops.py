"""Fake kernels for the C++ operators in csrc/ops.cpp, and the autograd of their backward
operators.

The forward operators' autograd is C++ (csrc/autograd_pool.cpp, csrc/autograd_conv.cpp):
Python's register_autograd wrapper cost about 60 us per forward + backward. Their backwards
call the backward operators here, whose autograd is built from cnnext operators that have
autograd of their own, so double backward (and higher) works and torch.compile sees no
Python-side kernels.
"""
import torch

from . import _C  # noqa: F401  (loads the library; the operators register themselves)
from ._shapes import conv_output_size

ops = torch.ops.cnnext


# ---- conv2d -------------------------------------------------------------------------------
def _nhwc_layout(input):
    """True where the CPU kernel returns channels_last results (csrc/cpu/conv2d.cpp): a
    channels_last input."""
    from torch._prims_common import suggest_memory_format

    return input.device.type == "cpu" and suggest_memory_format(input) == torch.channels_last


@torch.library.register_fake("cnnext::conv2d")
def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups, relu=False):
    torch._check(input.dim() == 4, lambda: "cnnext.conv2d: expected 4D input")
    torch._check(weight.dim() == 4, lambda: "cnnext.conv2d: expected 4D weight")
    # The checks torch.compile needs before sizes are formed (the real kernel checks the rest
    # with csrc/common/conv_shapes.h); same messages as there.
    for name, values, low, rule in (
        ("padding", padding, 0, "negative padding is not supported"),
        ("stride", stride, 1, "non-positive stride is not supported"),
        ("dilation", dilation, 0, "dilation should be greater than zero"),
    ):
        for v in values:
            torch._check(v >= low, lambda name=name, values=values, rule=rule: (
                f"cnnext.conv2d: {rule} ({name}={list(values)})"))
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
    if _nhwc_layout(input):
        return torch.empty((n, weight.shape[0], out_h, out_w), dtype=input.dtype,
                           device=input.device, memory_format=torch.channels_last)
    return input.new_empty((n, weight.shape[0], out_h, out_w))


@torch.library.register_fake("cnnext::conv2d_backward")
def _conv2d_backward_fake(grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    grad_input = input.new_empty(input.shape if output_mask[0] else (0,))
    if output_mask[0] and _nhwc_layout(input):
        grad_input = torch.empty(input.shape, dtype=input.dtype, device=input.device,
                                 memory_format=torch.channels_last)
    grad_weight = weight.new_empty(weight.shape if output_mask[1] else (0,))
    grad_bias = weight.new_empty((weight.shape[0],) if output_mask[2] else (0,))
    return grad_input, grad_weight, grad_bias


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


# ---- pooling ------------------------------------------------------------------------------
# Outputs, indices and grad_input follow the input's suggested memory format, as the kernels.
from torch._prims_common import suggest_memory_format as _suggest_memory_format  # noqa: E402

from ._shapes import pool_output_size  # noqa: E402
from ._taps import taps_to_indices  # noqa: E402


def _pool_empty(self, shape, dtype=None):
    return torch.empty(
        shape, dtype=dtype or self.dtype, device=self.device,
        memory_format=_suggest_memory_format(self),
    )


def _pool2d_out_shape(op, self, kernel_size, stride, padding, dilation, ceil_mode):
    torch._check(self.dim() == 4, lambda: f"cnnext.{op}: expected a 4D (N, C, H, W) input")
    n, c, h, w = self.shape
    stride = stride if len(stride) else kernel_size
    out_h = pool_output_size(h, kernel_size[0], padding[0], stride[0], dilation[0], ceil_mode)
    out_w = pool_output_size(w, kernel_size[-1], padding[-1], stride[-1], dilation[-1], ceil_mode)
    torch._check(out_h >= 1 and out_w >= 1, lambda: f"cnnext.{op}: Output size is too small")
    return (n, c, out_h, out_w)


@torch.library.register_fake("cnnext::max_pool2d")
def _max_pool2d_fake(self, kernel_size, stride, padding, dilation, ceil_mode):
    shape = _pool2d_out_shape("max_pool2d", self, kernel_size, stride, padding, dilation, ceil_mode)
    return _pool_empty(self, shape), _pool_empty(self, shape, torch.int64)


@torch.library.register_fake("cnnext::max_pool2d_values")
def _max_pool2d_values_fake(self, kernel_size, stride, padding, dilation, ceil_mode):
    shape = _pool2d_out_shape("max_pool2d", self, kernel_size, stride, padding, dilation, ceil_mode)
    return _pool_empty(self, shape)


@torch.library.register_fake("cnnext::max_pool2d_backward")
def _max_pool2d_backward_fake(grad_output, self, indices, kernel_size, stride, padding, dilation,
                              ceil_mode):
    return _pool_empty(self, self.shape)


@torch.library.register_fake("cnnext::max_pool2d_taps")
def _max_pool2d_taps_fake(self, kernel_size, stride, padding, dilation, ceil_mode):
    torch._check(kernel_size[0] * kernel_size[-1] <= 255,
                 lambda: "cnnext.max_pool2d_taps: a window has more taps than uint8 holds")
    shape = _pool2d_out_shape("max_pool2d_taps", self, kernel_size, stride, padding, dilation,
                              ceil_mode)
    return _pool_empty(self, shape), _pool_empty(self, shape, torch.uint8)


@torch.library.register_fake("cnnext::max_pool2d_taps_backward")
def _max_pool2d_taps_backward_fake(grad_output, self, taps, kernel_size, stride, padding,
                                   dilation, ceil_mode):
    return _pool_empty(self, self.shape)


@torch.library.register_fake("cnnext::avg_pool2d")
def _avg_pool2d_fake(self, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override):
    torch._check(divisor_override != 0, lambda: "cnnext.avg_pool2d: divisor must be not zero")
    shape = _pool2d_out_shape("avg_pool2d", self, kernel_size, stride, padding, (1, 1), ceil_mode)
    return _pool_empty(self, shape)


@torch.library.register_fake("cnnext::avg_pool2d_backward")
def _avg_pool2d_backward_fake(grad_output, self, kernel_size, stride, padding, ceil_mode,
                              count_include_pad, divisor_override):
    return _pool_empty(self, self.shape)


@torch.library.register_fake("cnnext::adaptive_avg_pool2d")
def _adaptive_avg_pool2d_fake(self, output_size):
    torch._check(self.dim() == 4, lambda: "cnnext.adaptive_avg_pool2d: expected a 4D input")
    return _pool_empty(self, (self.shape[0], self.shape[1], output_size[0], output_size[-1]))


@torch.library.register_fake("cnnext::adaptive_avg_pool2d_backward")
def _adaptive_avg_pool2d_backward_fake(grad_output, self):
    return _pool_empty(self, self.shape)


@torch.library.register_fake("cnnext::adaptive_max_pool2d")
def _adaptive_max_pool2d_fake(self, output_size):
    torch._check(self.dim() == 4, lambda: "cnnext.adaptive_max_pool2d: expected a 4D input")
    shape = (self.shape[0], self.shape[1], output_size[0], output_size[-1])
    return _pool_empty(self, shape), _pool_empty(self, shape, torch.int64)


@torch.library.register_fake("cnnext::adaptive_max_pool2d_backward")
def _adaptive_max_pool2d_backward_fake(grad_output, self, indices):
    return _pool_empty(self, self.shape)


def _gather_at_indices(grad, indices):
    """The adjoint of a max-pool backward: grad (input-shaped) read at each output's index."""
    flat = grad.flatten(2).gather(2, indices.flatten(2))
    return flat.view(indices.shape)


# The max backwards are linear in grad_output (constant in self): their own gradient wrt
# grad_output gathers at the indices.
def _max_backward_setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[2])
    ctx.num_inputs = len(inputs)


def _max_backward_backward(ctx, grad_grad_input):
    (indices,) = ctx.saved_tensors
    d_grad_output = None
    if ctx.needs_input_grad[0]:
        d_grad_output = _gather_at_indices(grad_grad_input, indices)
    return (d_grad_output,) + (None,) * (ctx.num_inputs - 1)


for _name in ("cnnext::max_pool2d_backward", "cnnext::adaptive_max_pool2d_backward"):
    torch.library.register_autograd(
        _name, _max_backward_backward, setup_context=_max_backward_setup_context
    )


# max_pool2d_taps: its C++ caller (max_pool2d_values' autograd) runs it below autograd; this
# is for a direct call. Its backward, like the others, is linear in grad_output, whose own
# gradient gathers at the taps' positions (0 for an empty window).
def _max_pool2d_taps_setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], output[1])
    ctx.params = tuple(inputs[1:])
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)


def _max_pool2d_taps_backward_of(ctx, grad_output, grad_taps):
    if grad_output is None or not ctx.needs_input_grad[0]:
        return (None,) * 6
    self, taps = ctx.saved_tensors
    return (ops.max_pool2d_taps_backward(grad_output, self, taps, *ctx.params),) + (None,) * 5


torch.library.register_autograd(
    "cnnext::max_pool2d_taps", _max_pool2d_taps_backward_of,
    setup_context=_max_pool2d_taps_setup_context,
)


def _taps_backward_setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[2])
    ctx.input_hw = tuple(inputs[1].shape[2:])
    ctx.params = tuple(inputs[3:7])
    ctx.num_inputs = len(inputs)


def _taps_backward_backward(ctx, grad_grad_input):
    (taps,) = ctx.saved_tensors
    d_grad_output = None
    if ctx.needs_input_grad[0]:
        indices, nonempty = taps_to_indices(taps, ctx.input_hw, *ctx.params)
        gathered = _gather_at_indices(grad_grad_input, indices)
        d_grad_output = torch.where(nonempty, gathered, torch.zeros_like(gathered))
    return (d_grad_output,) + (None,) * (ctx.num_inputs - 1)


torch.library.register_autograd(
    "cnnext::max_pool2d_taps_backward", _taps_backward_backward,
    setup_context=_taps_backward_setup_context,
)


# The avg backwards are linear in grad_output: their own gradient is the forward.
def _avg_backward_setup_context(ctx, inputs, output):
    ctx.params = tuple(inputs[2:])
    ctx.output_hw = tuple(inputs[0].shape[2:])
    ctx.num_inputs = len(inputs)


def _avg_pool2d_backward_backward(ctx, grad_grad_input):
    d_grad_output = None
    if ctx.needs_input_grad[0]:
        d_grad_output = ops.avg_pool2d(grad_grad_input, *ctx.params)
    return (d_grad_output,) + (None,) * (ctx.num_inputs - 1)


def _adaptive_avg_pool2d_backward_backward(ctx, grad_grad_input):
    d_grad_output = None
    if ctx.needs_input_grad[0]:
        d_grad_output = ops.adaptive_avg_pool2d(grad_grad_input, ctx.output_hw)
    return d_grad_output, None


torch.library.register_autograd(
    "cnnext::avg_pool2d_backward",
    _avg_pool2d_backward_backward,
    setup_context=_avg_backward_setup_context,
)
torch.library.register_autograd(
    "cnnext::adaptive_avg_pool2d_backward",
    _adaptive_avg_pool2d_backward_backward,
    setup_context=_avg_backward_setup_context,
)

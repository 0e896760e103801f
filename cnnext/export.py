"""Exporting converted models: a decomposition table that lowers every cnnext operator to aten
operators (torch.export's run_decompositions), and onnxscript translations of the forward
operators to ONNX Conv / MaxPool / AveragePool / GlobalAveragePool (torch.onnx.export(...,
dynamo=True, custom_translation_table=...))."""
import torch

from . import ops as _ops  # noqa: F401  (the operators and their fake kernels)
from ._taps import indices_to_taps, taps_to_indices

_cnnext = torch.ops.cnnext
_aten = torch.ops.aten


# ---- aten decompositions ------------------------------------------------------------------
# Each has the operator's signature and returns what it returns, computed by aten operators
# with the same semantics (torch's max pooling indices are flat h * W + w per plane too).
def _conv2d(input, weight, bias, stride, padding, dilation, groups, relu=False):
    out = _aten.convolution.default(
        input, weight, bias, stride, padding, dilation, False, [0, 0], groups
    )
    return _aten.relu.default(out) if relu else out


def _conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    grads = _aten.convolution_backward.default(
        grad_output, input, weight, [weight.shape[0]], stride, padding, dilation, False, [0, 0],
        groups, output_mask,
    )
    # The operator returns empty tensors for the unselected results, aten returns None.
    return tuple(g if g is not None else input.new_empty((0,)) for g in grads)


def _max_pool2d(self, kernel_size, stride, padding, dilation, ceil_mode):
    return _aten.max_pool2d_with_indices.default(
        self, kernel_size, stride, padding, dilation, ceil_mode
    )


def _max_pool2d_values(self, kernel_size, stride, padding, dilation, ceil_mode):
    return _aten.max_pool2d.default(self, kernel_size, stride, padding, dilation, ceil_mode)


def _max_pool2d_backward(grad_output, self, indices, kernel_size, stride, padding, dilation,
                         ceil_mode):
    return _aten.max_pool2d_with_indices_backward.default(
        grad_output, self, kernel_size, stride, padding, dilation, ceil_mode, indices
    )


def _max_pool2d_taps(self, kernel_size, stride, padding, dilation, ceil_mode):
    out, indices = _aten.max_pool2d_with_indices.default(
        self, kernel_size, stride, padding, dilation, ceil_mode
    )
    return out, indices_to_taps(indices, self.shape[2:], kernel_size, stride, padding, dilation)


def _max_pool2d_taps_backward(grad_output, self, taps, kernel_size, stride, padding, dilation,
                              ceil_mode):
    # An empty window's tap names no element: index 0 with a zero gradient adds nothing.
    indices, nonempty = taps_to_indices(taps, self.shape[2:], kernel_size, stride, padding,
                                        dilation)
    grad_output = _aten.where.self(nonempty, grad_output, _aten.zeros_like.default(grad_output))
    return _aten.max_pool2d_with_indices_backward.default(
        grad_output, self, kernel_size, stride, padding, dilation, ceil_mode, indices
    )


def _avg_pool2d(self, kernel_size, stride, padding, ceil_mode, count_include_pad,
                divisor_override):
    return _aten.avg_pool2d.default(
        self, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )


def _avg_pool2d_backward(grad_output, self, kernel_size, stride, padding, ceil_mode,
                         count_include_pad, divisor_override):
    return _aten.avg_pool2d_backward.default(
        grad_output, self, kernel_size, stride, padding, ceil_mode, count_include_pad,
        divisor_override,
    )


def _adaptive_avg_pool2d(self, output_size):
    return _aten._adaptive_avg_pool2d.default(self, output_size)


def _adaptive_avg_pool2d_backward(grad_output, self):
    return _aten._adaptive_avg_pool2d_backward.default(grad_output, self)


def _adaptive_max_pool2d(self, output_size):
    return _aten.adaptive_max_pool2d.default(self, output_size)


def _adaptive_max_pool2d_backward(grad_output, self, indices):
    return _aten.adaptive_max_pool2d_backward.default(grad_output, self, indices)


def _gemm(a, b, trans_a, trans_b, alpha, beta, c, isa):
    product = _aten.mm.default(a.t() if trans_a else a, b.t() if trans_b else b)
    if c is None or beta == 0:
        return _aten.mul.Scalar(product, alpha)
    return _aten.add.Tensor(_aten.mul.Scalar(c, beta), _aten.mul.Scalar(product, alpha))


def decompositions():
    """{cnnext OpOverload: aten implementation} for every cnnext operator on tensors (not the
    private _conv2d_* introspection operators, which take sizes and never appear in a graph), for
    `torch.export.export(model, args).run_decompositions(cnnext.decompositions())`. The result
    holds aten operators only and runs without cnnext. Merge it into
    torch.export.default_decompositions() to lower to the core aten set as well."""
    return {
        _cnnext.conv2d.default: _conv2d,
        _cnnext.conv2d_backward.default: _conv2d_backward,
        _cnnext.max_pool2d.default: _max_pool2d,
        _cnnext.max_pool2d_values.default: _max_pool2d_values,
        _cnnext.max_pool2d_backward.default: _max_pool2d_backward,
        _cnnext.max_pool2d_taps.default: _max_pool2d_taps,
        _cnnext.max_pool2d_taps_backward.default: _max_pool2d_taps_backward,
        _cnnext.avg_pool2d.default: _avg_pool2d,
        _cnnext.avg_pool2d_backward.default: _avg_pool2d_backward,
        _cnnext.adaptive_avg_pool2d.default: _adaptive_avg_pool2d,
        _cnnext.adaptive_avg_pool2d_backward.default: _adaptive_avg_pool2d_backward,
        _cnnext.adaptive_max_pool2d.default: _adaptive_max_pool2d,
        _cnnext.adaptive_max_pool2d_backward.default: _adaptive_max_pool2d_backward,
        _cnnext.gemm.default: _gemm,
    }


def onnx_translation_table():
    """{cnnext OpOverload: onnxscript function} for the forward operators, for
    `torch.onnx.export(model, args, dynamo=True, custom_translation_table=...)`. Needs onnxscript
    (imported here, not with cnnext)."""
    from . import _onnx

    return _onnx.translation_table()

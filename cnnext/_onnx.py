"""onnxscript translations of the cnnext forward operators (cnnext.onnx_translation_table()).

The functions are traced by torch.onnx's exporter: tensors arrive as ONNX values, the annotated
arguments as attributes. What ONNX cannot express raises an error naming the operator and the
argument. Backward operators have no translation (export inference graphs).
"""
from typing import Optional, Sequence

import torch
from onnxscript import opset18 as op


def _pads(padding):
    # ONNX pads are (begin_h, begin_w, end_h, end_w); cnnext's padding is symmetric.
    return [padding[0], padding[1], padding[0], padding[1]]


def _static_hw(name, self):
    shape = self.shape
    hw = [shape[2], shape[3]] if shape is not None and len(shape) == 4 else None
    if hw is None or not all(isinstance(s, int) for s in hw):
        raise NotImplementedError(
            f"cnnext.{name}: the ONNX translation needs a static input height and width "
            f"(got shape {shape}); export with static shapes for this layer"
        )
    return hw


def conv2d(input, weight, bias=None, stride: Sequence[int] = (1, 1),
           padding: Sequence[int] = (0, 0), dilation: Sequence[int] = (1, 1), groups: int = 1,
           relu: bool = False):
    inputs = (input, weight) if bias is None else (input, weight, bias)
    out = op.Conv(*inputs, strides=list(stride), pads=_pads(padding), dilations=list(dilation),
                  group=groups)
    return op.Relu(out) if relu else out


def _plane_indices(self, indices, dilation):
    # ONNX MaxPool's indices are flat over the whole (N, C, H, W) tensor; cnnext's (torch's)
    # are flat h * W + w per plane. A 1x1 pool's indices give each plane's offset at [.., 0, 0].
    _, offsets = op.MaxPool(self, kernel_shape=[1, 1], strides=[1, 1], dilations=list(dilation))
    first = op.Slice(offsets, op.Constant(value_ints=[0, 0]), op.Constant(value_ints=[1, 1]),
                     op.Constant(value_ints=[2, 3]))
    return op.Sub(indices, first)


def max_pool2d(self, kernel_size: Sequence[int], stride: Sequence[int],
               padding: Sequence[int], dilation: Sequence[int], ceil_mode: bool):
    stride = list(stride) if len(stride) else list(kernel_size)
    out, indices = op.MaxPool(self, kernel_shape=list(kernel_size), strides=stride,
                              pads=_pads(padding), dilations=list(dilation),
                              ceil_mode=int(ceil_mode))
    return out, _plane_indices(self, indices, [1, 1])


def max_pool2d_values(self, kernel_size: Sequence[int], stride: Sequence[int],
                      padding: Sequence[int], dilation: Sequence[int], ceil_mode: bool):
    stride = list(stride) if len(stride) else list(kernel_size)
    out, _ = op.MaxPool(self, kernel_shape=list(kernel_size), strides=stride, pads=_pads(padding),
                        dilations=list(dilation), ceil_mode=int(ceil_mode))
    return out


def avg_pool2d(self, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int],
               ceil_mode: bool, count_include_pad: bool, divisor_override: Optional[int] = None):
    stride = list(stride) if len(stride) else list(kernel_size)
    if divisor_override is None:
        return op.AveragePool(self, kernel_shape=list(kernel_size), strides=stride,
                              pads=_pads(padding), ceil_mode=int(ceil_mode),
                              count_include_pad=int(count_include_pad))
    if ceil_mode:
        # A ceil_mode window may hang past the padding, where ONNX's divisor is no longer kh*kw.
        raise NotImplementedError(
            "cnnext.avg_pool2d: ONNX AveragePool cannot express divisor_override together with "
            f"ceil_mode=True (divisor_override={divisor_override})"
        )
    # Every window lies inside the padded input: window sum = padded mean * kh * kw.
    mean = op.AveragePool(self, kernel_shape=list(kernel_size), strides=stride,
                          pads=_pads(padding), count_include_pad=1)
    scale = op.CastLike(op.Constant(value_float=kernel_size[0] * kernel_size[1] / divisor_override),
                        mean)
    return op.Mul(mean, scale)


def _adaptive_windows(name, self, output_size):
    """The (kernel, stride) of a plain pool equal to the adaptive one, or an error: adaptive
    windows are equal and disjoint only where each output size divides the input size."""
    hw = _static_hw(name, self)
    if any(size % out for size, out in zip(hw, output_size)):
        raise NotImplementedError(
            f"cnnext.{name}: ONNX has no adaptive pooling; it is translated only where the input "
            f"size is a multiple of output_size (input {hw}, output_size={list(output_size)})"
        )
    kernel = [size // out for size, out in zip(hw, output_size)]
    return kernel, kernel


def adaptive_avg_pool2d(self, output_size: Sequence[int]):
    if list(output_size) == [1, 1]:
        return op.GlobalAveragePool(self)
    kernel, stride = _adaptive_windows("adaptive_avg_pool2d", self, output_size)
    return op.AveragePool(self, kernel_shape=kernel, strides=stride)


def adaptive_max_pool2d(self, output_size: Sequence[int]):
    kernel, stride = _adaptive_windows("adaptive_max_pool2d", self, output_size)
    out, indices = op.MaxPool(self, kernel_shape=kernel, strides=stride)
    return out, _plane_indices(self, indices, [1, 1])


def translation_table():
    ops = torch.ops.cnnext
    return {
        ops.conv2d.default: conv2d,
        ops.max_pool2d.default: max_pool2d,
        ops.max_pool2d_values.default: max_pool2d_values,
        ops.avg_pool2d.default: avg_pool2d,
        ops.adaptive_avg_pool2d.default: adaptive_avg_pool2d,
        ops.adaptive_max_pool2d.default: adaptive_max_pool2d,
    }

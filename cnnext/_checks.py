"""The checks torch makes before its conv2d and pooling kernels see the arguments, in torch's
order and with torch's wording (ATen Convolution.cpp: conv2d, batchify, _convolution,
_convolution_same, check_shape_forward; Pooling.cpp and Pool.h; AdaptiveAveragePooling.cpp).
The operators check the rest in C++ (csrc/common/conv_shapes.h, pool_shapes.h). Most of this
runs only on the error path: the functional calls it when its fast path does not apply."""
import torch

# The names torch's messages give dtypes (caffe2 TypeMeta names).
_TYPE_META_NAMES = {
    torch.float32: "float",
    torch.float64: "double",
    torch.float16: "c10::Half",
    torch.bfloat16: "c10::BFloat16",
    torch.int64: "long int",
    torch.int32: "int",
    torch.int16: "short int",
    torch.int8: "signed char",
    torch.uint8: "unsigned char",
    torch.bool: "bool",
    torch.complex32: "c10::complex<c10::Half>",
    torch.complex64: "c10::complex<float>",
    torch.complex128: "c10::complex<double>",
}


def _type_meta_name(dtype):
    return _TYPE_META_NAMES.get(dtype, str(dtype).replace("torch.", ""))


# ---- conv2d ---------------------------------------------------------------------------------
def conv2d_bias_dtype(input, bias):
    """torch's conv2d compares the bias dtype first of all (not on the padding-string path)."""
    if bias is not None and bias.dtype != input.dtype:
        raise RuntimeError(
            f"cnnext.conv2d: Input type ({_type_meta_name(input.dtype)}) and bias type "
            f"({_type_meta_name(bias.dtype)}) should be the same"
        )


def conv2d_batchify(input):
    """torch's batchify: 3-D (unbatched) or 4-D input; returns whether it is unbatched."""
    if input.dim() not in (3, 4):
        raise RuntimeError(
            "cnnext.conv2d: Expected 3D (unbatched) or 4D (batched) input to conv2d, "
            f"but got input of size: {list(input.shape)}"
        )
    return input.dim() == 3


def _expand(values, name, dims):
    """torch's expand_param_if_needed: one value or one per spatial dimension."""
    if len(values) == 1:
        return values * dims
    if len(values) != dims:
        raise RuntimeError(
            f"cnnext.conv2d: expected {name} to be a single integer value or a list of {dims} "
            f"values to match the convolution dimensions, but got {name}={list(values)}"
        )
    return values


def _weight_rank_and_groups(weight, groups):
    if weight.dim() < 3:
        raise RuntimeError("cnnext.conv2d: weight should have at least three dimensions")
    if groups <= 0:
        raise RuntimeError(f"cnnext.conv2d: non-positive groups is not supported (groups={groups})")


def _wrong_weight_rank(input, weight, space=" "):
    return RuntimeError(
        f"cnnext.conv2d: Expected {weight.dim()}-dimensional input for {weight.dim()}-dimensional "
        f"weight{space}{list(weight.shape)}, but got {input.dim()}-dimensional input of size "
        f"{list(input.shape)} instead"
    )


def conv2d_convolution(input, weight, stride, padding, dilation, groups):
    """torch's _convolution and check_shape_forward up to the weight's rank, for a 4-D input;
    stride, padding and dilation are tuples of ints of any length. Returns them as pairs;
    raises where torch raises before the shape checks the operator makes."""
    _weight_rank_and_groups(weight, groups)
    dims = weight.dim() - 2
    stride = _expand(stride, "stride", dims)
    padding = _expand(padding, "padding", dims)
    dilation = _expand(dilation, "dilation", dims)
    if weight.dim() != 4:
        # The operator takes 4-D weights only: the rest of torch's order is checked here.
        if any(p < 0 for p in padding):
            raise RuntimeError("cnnext.conv2d: negative padding is not supported")
        if any(s <= 0 for s in stride):
            raise RuntimeError("cnnext.conv2d: non-positive stride is not supported")
        if any(d < 0 for d in dilation):
            raise RuntimeError("cnnext.conv2d: dilation should be greater than zero")
        raise _wrong_weight_rank(input, weight)
    return stride, padding, dilation


def conv2d_same(input, weight, stride, dilation, groups):
    """torch's _convolution_same, for a 4-D input: checks before the padding is computed."""
    _weight_rank_and_groups(weight, groups)
    if weight.dim() != input.dim():
        raise _wrong_weight_rank(input, weight, space="")
    dims = weight.dim() - 2
    for name, values in (("stride", stride), ("dilation", dilation)):
        if len(values) not in (1, dims):
            raise RuntimeError(f"cnnext.conv2d: {name} cannot broadcast to {dims} dimensions")
    if any(s != 1 for s in stride):
        raise RuntimeError(
            "cnnext.conv2d: padding='same' is not supported for strided convolutions "
            f"(stride={list(stride)})"
        )
    return dilation * dims if len(dilation) == 1 else dilation


def invalid_padding_string(padding):
    return RuntimeError(f"cnnext.conv2d: Invalid padding string: '{padding}'")


# ---- pooling --------------------------------------------------------------------------------
def pool_standin(input):
    """An empty batch with input's last three sizes: running an operator on it makes the
    operator's argument checks (torch's order) without computing anything."""
    return input.new_empty((0,) + tuple(input.shape[-3:]))


def pool_sizes_error(op, input):
    return RuntimeError(
        f"cnnext.{op}: Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size "
        f"for input, but got:{list(input.shape)}"
    )


def raise_pool_sizes_error(op, input, run_checks):
    """torch checks the window arguments before the input's sizes: run the operator's checks
    on a stand-in (they raise on a bad window argument), then report the sizes."""
    try:
        run_checks(pool_standin(input))
    except RuntimeError as e:
        if "tensor with optional 0 dim batch size" not in str(e):
            raise
    raise pool_sizes_error(op, input)

"""Bad input to cnnext.functional.conv2d gets torch's error: the same exception class as
torch.nn.functional.conv2d for the same call, and a message prefixed "cnnext.conv2d" that names
the argument at fault. Never a crash."""
import re

import pytest
import torch
import torch.nn.functional as F

import cnnext

CF = cnnext.functional.conv2d


def x(*shape, dtype=torch.float32):
    return torch.randn(*(shape or (2, 4, 8, 8)), dtype=dtype)


def w(*shape, dtype=torch.float32):
    return torch.randn(*(shape or (6, 4, 3, 3)), dtype=dtype)


# name -> (args, kwargs, words our message must contain)
CASES = {
    # input rank
    "input 2-D": ((x(4, 8), w()), {}, ["input", "[4, 8]"]),
    "input 5-D": ((x(1, 2, 4, 8, 8), w()), {}, ["input", "[1, 2, 4, 8, 8]"]),
    "input 1-D": ((x(8), w()), {}, ["input"]),
    # weight rank
    # torch expands the int[2] arguments to weight.dim() - 2 values before it compares ranks
    "weight 3-D": ((x(), w(6, 4, 3)), {}, ["list of 1 values", "stride=[1, 1]"]),
    "weight 3-D, one stride": ((x(), w(6, 4, 3)), dict(stride=[1], padding=[0], dilation=[1]),
                               ["3-dimensional weight [6, 4, 3]", "input of size [2, 4, 8, 8]"]),
    "weight 3-D, 'same'": ((x(), w(6, 4, 3)), dict(padding="same"), ["3-dimensional weight[6, 4, 3]"]),
    "weight 5-D": ((x(), w(6, 4, 3, 3, 1)), {}, ["list of 3 values"]),
    "weight 2-D": ((x(), w(6, 4)), {}, ["weight"]),
    # channels and groups
    "channel mismatch": ((x(), w(6, 3, 3, 3)), {}, ["channels", "weight of size [6, 3, 3, 3]"]),
    "channel mismatch batch-less": ((x(4, 8, 8), w(6, 3, 3, 3)), {}, ["channels"]),
    "groups do not divide in_channels": ((x(2, 5, 8, 8), w(6, 2, 3, 3)), dict(groups=2), ["groups=2"]),
    "groups do not divide out_channels": ((x(), w(5, 2, 3, 3)), dict(groups=2), ["groups=2", "weight"]),
    "groups larger than out_channels": ((x(), w(2, 1, 3, 3)), dict(groups=4), ["groups=4"]),
    "groups 0": ((x(), w()), dict(groups=0), ["groups=0"]),
    "groups negative": ((x(), w()), dict(groups=-2), ["groups=-2"]),
    "weight with no out_channels": ((x(), w(0, 4, 3, 3)), {}, ["weight", "[0, 4, 3, 3]"]),
    # sizes
    "kernel larger than input": ((x(1, 4, 2, 2), w()), {}, ["Kernel size", "input size"]),
    "dilated kernel larger than input": ((x(1, 4, 4, 4), w()), dict(dilation=2), ["Kernel size"]),
    "kernel larger than padded input": ((x(1, 4, 1, 5), w(6, 4, 5, 1)), dict(padding=(1, 0)), ["Kernel size"]),
    "empty image": ((x(1, 4, 0, 8), w()), dict(padding=2), ["input shape", "[1, 4, 0, 8]"]),
    "empty image, no padding": ((x(1, 4, 8, 0), w(6, 4, 1, 1)), {}, ["Kernel size"]),
    "zero-size kernel": ((x().double(), w(6, 4, 0, 3).double()), {}, ["kernel_height: 0"]),
    # stride / padding / dilation values
    "stride 0": ((x(), w()), dict(stride=0), ["stride=[0, 0]"]),
    "stride negative": ((x(), w()), dict(stride=(1, -1)), ["stride=[1, -1]"]),
    "padding negative": ((x(), w()), dict(padding=-1), ["padding=[-1, -1]"]),
    "padding negative, one side": ((x(), w()), dict(padding=(0, -1)), ["padding=[0, -1]"]),
    "dilation 0": ((x(), w()), dict(dilation=0), ["dilation=[0, 0]"]),
    "dilation negative": ((x(), w()), dict(dilation=(1, -2)), ["dilation=[1, -2]"]),
    # argument lengths and types
    "stride of 3": ((x(), w()), dict(stride=[1, 1, 1]), ["stride=[1, 1, 1]"]),
    "stride empty": ((x(), w()), dict(stride=[]), ["stride=[]"]),
    "padding of 3": ((x(), w()), dict(padding=(1, 1, 1)), ["padding=[1, 1, 1]"]),
    "dilation of 3": ((x(), w()), dict(dilation=(1, 1, 1)), ["dilation=[1, 1, 1]"]),
    "stride float": ((x(), w()), dict(stride=1.0), ["stride"]),
    "stride bool": ((x(), w()), dict(stride=True), ["stride"]),
    "stride None": ((x(), w()), dict(stride=None), ["stride"]),
    "stride with a float": ((x(), w()), dict(stride=(1, 2.0)), ["stride"]),
    "stride float tensor": ((x(), w()), dict(stride=torch.tensor(2.0)), ["stride"]),
    "stride 1-D tensor": ((x(), w()), dict(stride=torch.tensor([2, 1])), ["stride"]),
    "padding bool": ((x(), w()), dict(padding=True), ["padding"]),
    "padding float": ((x(), w()), dict(padding=1.5), ["padding"]),
    "padding list of strings": ((x(), w()), dict(padding=["same"]), ["padding"]),
    "dilation float": ((x(), w()), dict(dilation=2.0), ["dilation"]),
    "groups float": ((x(), w()), dict(groups=1.0), ["groups"]),
    "groups bool": ((x(), w()), dict(groups=True), ["groups"]),
    "groups None": ((x(), w()), dict(groups=None), ["groups"]),
    # padding strings
    "'same' with stride 2": ((x(), w()), dict(padding="same", stride=2), ["same", "strided"]),
    "'same' with stride (1, 2)": ((x(), w()), dict(padding="same", stride=(1, 2)), ["same", "strided"]),
    "invalid padding string": ((x(), w()), dict(padding="full"), ["padding", "'full'"]),
    "padding string in capitals": ((x(), w()), dict(padding="SAME"), ["padding", "'SAME'"]),
    # bias
    "bias 2-D": ((x(), w(), torch.randn(2, 3)), {}, ["bias", "[2, 3]"]),
    "bias wrong length": ((x(), w(), torch.randn(5)), {}, ["bias", "[5]"]),
    "bias 0-D": ((x(), w(), torch.tensor(1.0)), {}, ["bias"]),
    "bias float64": ((x(), w(), torch.randn(6, dtype=torch.float64)), {}, ["bias type (double)"]),
    "bias int64": ((x(), w(), torch.ones(6, dtype=torch.long)), {}, ["bias type (long int)"]),
    "bias float64, input 2-D": ((x(4, 8), w(), torch.randn(6, dtype=torch.float64)), {}, ["bias type (double)"]),
    "bias not a tensor": ((x(), w(), 3), {}, ["bias"]),
    # dtypes
    "weight float64": ((x(), w(dtype=torch.float64)), {}, ["weight", "Double"]),
    "input float16, weight float32": ((x(dtype=torch.float16), w()), {}, ["weight", "Half"]),
    "bfloat16 with float32 bias": ((x(dtype=torch.bfloat16), w(dtype=torch.bfloat16), torch.randn(6)), {}, ["bias"]),
    "int input, float weight": ((x().int(), w()), {}, ["weight", "Int"]),
    "float input, int weight": ((x(), w().long()), {}, ["weight", "Long"]),
    "complex input, real weight": ((x().cfloat(), w()), {}, ["weight", "Complex"]),
    "bool": ((x().bool(), w().bool()), {}, ["bool"]),
    "float8": ((x().to(torch.float8_e4m3fn), w().to(torch.float8_e4m3fn)), {}, ["float8"]),
    "int32 dilated": ((x().int(), w().int()), dict(dilation=2), ["dilation=[2, 2]", "int32"]),
    "uint8 dilated 'same'": ((x().to(torch.uint8), w().to(torch.uint8)), dict(dilation=(1, 2), padding="same"), ["dilation"]),
    # not tensors
    "input a list": (([1.0, 2.0], w()), {}, ["input"]),
    "weight an int": ((x(), 3), {}, ["weight"]),
    "input None": ((None, w()), {}, ["input"]),
}


def _outcome(fn, args, kwargs):
    try:
        fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001  (comparing whatever torch raises)
        return e
    return None


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_raises_like_torch(name):
    args, kwargs, words = CASES[name]
    expected = _outcome(F.conv2d, args, kwargs)
    assert expected is not None, f"torch accepts {name!r}: the case is not bad input"
    ours = _outcome(CF, args, kwargs)
    assert ours is not None, f"cnnext accepted {name!r}; torch raised {expected!r}"
    assert type(ours) is type(expected), f"torch raised {expected!r}, cnnext {ours!r}"
    message = str(ours)
    assert message.startswith("cnnext.conv2d"), message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_bad_input_to_the_operators_directly():
    # The operators check their own arguments (torch.compile and other callers bypass the
    # functional): wrong lengths, wrong grad_output, non-float dtypes.
    ops = torch.ops.cnnext
    cases = [
        (lambda: ops.conv2d(x(), w(), None, [1, 1, 1], [0, 0], [1, 1], 1), "stride"),
        (lambda: ops.conv2d(x(), w(), None, [1, 1], [-1, 0], [1, 1], 1), "padding=[-1, 0]"),
        (lambda: ops.conv2d(x(4, 8, 8), w(), None, [1, 1], [0, 0], [1, 1], 1), "input"),
        (lambda: ops.conv2d(x().int(), w().int(), None, [1, 1], [0, 0], [1, 1], 1), "Int"),
        (lambda: ops.conv2d_backward(x(2, 6, 5, 5), x(), w(), [1, 1], [0, 0], [1, 1], 1,
                                     [True, True, True]), "grad_output"),
        (lambda: ops.conv2d_backward(x(2, 6, 6, 6).double(), x(), w(), [1, 1], [0, 0], [1, 1],
                                     1, [True, True, True]), "grad_output"),
        (lambda: ops.gemm(x(3, 4), x(5, 6), False, False, 1.0, 0.0, None, "auto"), "inner"),
        (lambda: ops.gemm(x(3, 4), x(4, 6), False, False, 1.0, 1.0, None, "auto"), "beta"),
        (lambda: ops.gemm(x(3, 4), x(4, 6), False, False, 1.0, 0.0, None, "sse9"), "sse9"),
    ]
    for call, word in cases:
        with pytest.raises(RuntimeError, match=re.escape(word)):
            call()


def test_module_rejects_bad_input_like_torch():
    conv, ref = cnnext.Conv2d(4, 6, 3), torch.nn.Conv2d(4, 6, 3)
    for bad in (x(2, 3, 8, 8), x(8, 8), x(1, 4, 2, 2)):
        expected = _outcome(ref, (bad,), {})
        ours = _outcome(conv, (bad,), {})
        assert type(ours) is type(expected) and str(ours).startswith("cnnext.conv2d")

"""Errors users can act on: every bad call raises torch's exception class with a message that
starts "cnnext.<op>: " and names the argument and the offending value (docs/errors.md lists
them). Each case is also run through torch, to prove the class matches."""
import re

import pytest
import torch
import torch.nn.functional as F

import cnnext

x = torch.randn(1, 4, 8, 8)
w = torch.randn(4, 2, 3, 3)
has_pooling = hasattr(cnnext.functional, "max_pool2d")

# name: (arguments of conv2d, regex the message must match after the "cnnext.conv2d: " prefix)
CONV_CASES = {
    "input rank": ((torch.randn(8, 8), w), r"input of size: \[8, 8\]"),
    "weight rank": ((x, torch.randn(4, 4, 3), None, 1, "same"),
                    r"3-dimensional input for 3-dimensional weight\[4, 4, 3\]"),
    "zero kernel": ((x, torch.randn(4, 4, 0, 3)), r"kernel_height: 0 kernel_width: 3"),
    "weight dtype": ((x, w.double(), None, 1, 0, 1, 2), r"Input type \(Float\) and weight type \(Double\)"),
    "stride": ((x, w, None, 0, 0, 1, 2), r"stride=\[0, 0\]"),
    "stride length": ((x, w, None, (1, 2, 3), 0, 1, 2), r"stride=\[1, 2, 3\]"),
    "stride type": ((x, w, None, 1.5, 0, 1, 2), r"stride .*1\.5"),
    "padding": ((x, w, None, 1, -1, 1, 2), r"padding=\[-1, -1\]"),
    "padding string": ((x, w, None, 1, "full", 1, 2), r"padding string: 'full'"),
    "same with stride": ((x, w, None, 2, "same", 1, 2), r"padding='same'.*stride=\[2, 2\]"),
    "dilation": ((x, w, None, 1, 0, (1, 0), 2), r"dilation=\[1, 0\]"),
    "groups": ((x, w, None, 1, 0, 1, 0), r"groups=0"),
    "groups type": ((x, w, None, 1, 0, 1, 2.0), r"groups .*2\.0"),
    "groups vs weight": ((x, torch.randn(3, 2, 3, 3), None, 1, 0, 1, 2),
                         r"groups=2.*weight of size \[\[3, 2, 3, 3\]\]"),
    "channels": ((x, w), r"groups=1, weight of size \[4, 2, 3, 3\].*input\[1, 4, 8, 8\].*2 channels.*4 channels"),
    "bias size": ((x, w, torch.randn(3), 1, 0, 1, 2), r"bias of size \[3\]"),
    "bias dtype": ((x, w, torch.randn(4).double(), 1, 0, 1, 2), r"bias type \(double\)"),
    "kernel larger than input": ((x, torch.randn(4, 2, 9, 9), None, 1, 0, 1, 2),
                                 r"\(8 x 8\)\. Kernel size: \(9 x 9\)"),
}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_error_names_argument_and_value(case):
    args, pattern = CONV_CASES[case]
    with pytest.raises(Exception) as expected:
        F.conv2d(*args)
    with pytest.raises(expected.type) as actual:
        cnnext.functional.conv2d(*args)
    message = str(actual.value)
    assert message.startswith("cnnext.conv2d: "), message
    assert re.search(pattern, message), f"{message!r} does not match {pattern!r}"


def test_conv2d_operator_rejects_integer_dtype_naming_it():
    # The functional computes integer inputs as torch does (through float64); the operator
    # itself takes float32/float64 only and says which dtype it got.
    with pytest.raises(RuntimeError, match=r"^cnnext\.conv2d: input dtype Long is not supported"):
        torch.ops.cnnext.conv2d(x.long(), w.long(), None, (1, 1), (0, 0), (1, 1), 2)


def test_conv2d_module_error_is_the_functional_one():
    conv = cnnext.Conv2d(4, 4, 3)
    with pytest.raises(RuntimeError, match=r"^cnnext\.conv2d: .*input\[1, 3, 8, 8\]"):
        conv(torch.randn(1, 3, 8, 8))


y = torch.randn(1, 2, 6, 6)
POOL_CASES = {
    # kernel_size=0 with the default stride: torch reports the (derived) zero stride first.
    "max kernel": ("max_pool2d", (y, 0), r"(kernel|stride).*(\b0\b|zero)"),
    "max stride": ("max_pool2d", (y, 2, 0), r"stride.*(\b0\b|zero)"),
    "max padding": ("max_pool2d", (y, 2, 1, 2), r"pad.*2"),
    "max dilation": ("max_pool2d", (y, 2, 1, 0, 0), r"dilation.*0"),
    "max input rank": ("max_pool2d", (torch.randn(6, 6), 2), r"\[6, 6\]"),
    "max output too small": ("max_pool2d", (torch.randn(1, 1, 2, 2), 3), r"1x2x2"),
    "avg kernel": ("avg_pool2d", (y, (2, 0)), r"(kernel|stride).*(\b0\b|zero)"),
    "avg padding": ("avg_pool2d", (y, 2, 2, 2), r"pad.*2"),
    "avg divisor": ("avg_pool2d", (y, 2, 2, 0, False, True, 0), r"divisor"),
    "adaptive avg size": ("adaptive_avg_pool2d", (y, (-1, 2)), r"-1"),
    "adaptive max size": ("adaptive_max_pool2d", (y, (2, -1)), r"-1"),
}


@pytest.mark.skipif(not has_pooling, reason="pooling not built")
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pooling_error_names_argument_and_value(case):
    op, args, pattern = POOL_CASES[case]
    with pytest.raises(Exception) as expected:
        getattr(F, op)(*args)
    with pytest.raises(expected.type) as actual:
        getattr(cnnext.functional, op)(*args)
    message = str(actual.value)
    assert message.startswith(f"cnnext.{op}: "), message
    assert re.search(pattern, message), f"{message!r} does not match {pattern!r}"

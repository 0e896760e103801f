"""The separable values-only pooling kernels (csrc/cpu/pool2d_separable.inc) against torch.

They run for windows of dilation 1 that overlap: NCHW planes (a column pass down the window rows
into a padded row buffer, then a pass across) and channels_last at stride 1 along W (a ring of
reduced columns). Shapes reach every branch at every ISA width: NCHW rows narrower than a
quarter, half and whole vector and with an overlapping last block, ceil-mode windows hanging past
the input, channels_last chunks of 16 vectors (C = 300 at 16 lanes), tails (C = 19) and the
widest window the ring holds (8) beside one it does not (9)."""
import pytest
import torch
import torch.nn.functional as F

import cnnext.functional as CF
from conftest import assert_close
from test_pool_lowp import _input as _lowp_input, _same_values

ISAS = ["portable", "avx2", "avx512"]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
NCHW_WIDTHS = [3, 5, 9, 13, 37]
NCHW_MAX = [dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=3, stride=2),
            dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
            dict(kernel_size=(3, 2), stride=(1, 2)), dict(kernel_size=5, stride=1, padding=2),
            dict(kernel_size=(2, 4), stride=3, padding=(1, 2), ceil_mode=True)]
NCHW_AVG = NCHW_MAX[:4] + [dict(kernel_size=3, stride=1, padding=1, count_include_pad=False),
                           dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                count_include_pad=False),
                           dict(kernel_size=(3, 2), stride=(1, 2), divisor_override=5)]
CL_WINDOWS = [dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=(2, 2), stride=1),
              dict(kernel_size=(1, 8), stride=1, padding=(0, 4)),
              dict(kernel_size=(3, 9), stride=(2, 1), padding=(1, 4), ceil_mode=True),
              dict(kernel_size=5, stride=1, padding=2, ceil_mode=True)]


def _input(shape, dtype, channels_last, special):
    """test_pool_lowp's input (ties, -inf, NaN, a whole plane of -inf), plus NaN with the sign
    bit set (x86's default NaN, which an integer-key max must not lose)."""
    x = _lowp_input(dtype, False, shape=shape, special=special)
    if special:
        x.view(-1)[::41] = -float("nan")
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _check(shape, channels_last, dtype, max_args, avg_args):
    x = _input(shape, dtype, channels_last, special=True)
    finite = _input(shape, dtype, channels_last, special=False)
    with torch.no_grad():
        for args in max_args:
            out = CF.max_pool2d(x, **args)
            _same_values(out, F.max_pool2d(x, **args))
            assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
        for args in avg_args:
            out = CF.avg_pool2d(finite, **args)
            # Column sums, then across: float32 rounding apart from torch's row-major order.
            assert_close(out, F.avg_pool2d(finite.double(), **args).to(dtype), dtype)
            assert out.is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", NCHW_WIDTHS)
def test_nchw_rows(monkeypatch, isa, dtype, width):
    monkeypatch.setenv("CNNEXT_ISA", isa)
    _check((2, 4, 7, width), False, dtype, NCHW_MAX, NCHW_AVG)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", [16, 19, 300])
def test_channels_last_ring(monkeypatch, isa, dtype, channels):
    monkeypatch.setenv("CNNEXT_ISA", isa)
    _check((2, channels, 5, 11), True, dtype, CL_WINDOWS, CL_WINDOWS)


def test_gradients_unchanged_by_the_values_only_path():
    """With grad, the indexed kernels run; the values agree with the separable path's."""
    x = _input((2, 24, 9, 13), torch.float32, True, special=False).requires_grad_()
    for args in (CL_WINDOWS[0], NCHW_MAX[2]):
        with torch.no_grad():
            values_only = CF.max_pool2d(x, **args)
        out = CF.max_pool2d(x, **args)
        assert torch.equal(out, values_only)
        (g,) = torch.autograd.grad(out.sum(), x)
        (ref,) = torch.autograd.grad(F.max_pool2d(x, **args).sum(), x)
        assert torch.equal(g, ref)

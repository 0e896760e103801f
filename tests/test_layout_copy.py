"""The NCHW <-> channels_last copy the CPU conv uses when it runs a row of the other layout
(csrc/cpu/layout_copy.h), through torch.ops.cnnext._layout_copy: the same values as torch's
own copy, in the requested strides, for every dtype, tile edge and ISA path."""
import pytest
import torch

import cnnext  # noqa: F401

CL = torch.channels_last
copy = torch.ops.cnnext._layout_copy

SIZES = [
    (2, 32, 7, 9),     # 32 channels, a 63-pixel plane: partial pixel tiles
    (1, 19, 5, 5),     # partial channel and pixel tiles
    (3, 16, 4, 4),     # whole tiles
    (1, 512, 7, 7),    # a late ResNet stage
    (2, 8, 1, 33),     # one row
    (1, 3, 6, 6),      # few channels: torch's copy_
    (2, 1, 5, 5),      # one channel: both layouts coincide
    (2, 24, 1, 1),     # 1x1 map: both layouts coincide
    (0, 16, 4, 4),     # batch 0
]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _ids(size):
    return "x".join(map(str, size))


@pytest.mark.parametrize("isa", ["auto", "avx2"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("size", SIZES, ids=_ids)
def test_matches_torch_both_directions(size, dtype, isa, monkeypatch):
    monkeypatch.setenv("CNNEXT_ISA", isa)  # avx2: the cache-tile path for float32 too
    x = torch.randn(size).to(dtype)
    to_cl = copy(x, True)
    assert to_cl.is_contiguous(memory_format=CL)
    assert to_cl.stride() == torch.empty(size, memory_format=CL).stride()
    assert torch.equal(to_cl, x)
    back = copy(to_cl, False)
    assert back.is_contiguous()
    assert torch.equal(back, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_other_strides_fall_back_to_copy(dtype):
    base = torch.randn(2, 20, 9, 11).to(dtype)
    for x in (base[:, ::2], base.transpose(2, 3), base.expand(2, 20, 9, 11)[:, :, :, 1:]):
        assert torch.equal(copy(x, True), x) and copy(x, True).is_contiguous(memory_format=CL)
        assert torch.equal(copy(x, False), x) and copy(x, False).is_contiguous()


def test_nan_and_signed_zero_bits_kept():
    x = torch.randn(1, 17, 6, 5)
    x[0, 3, 2, 1] = float("nan")
    x[0, 16, 5, 4] = -0.0
    y = copy(copy(x, True), False)
    assert torch.equal(y.view(torch.int32), x.view(torch.int32))


def test_rejects_other_ranks():
    with pytest.raises(RuntimeError, match="4-D"):
        copy(torch.randn(3, 4, 5), True)

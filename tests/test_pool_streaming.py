"""Two channels_last pooling forward paths against torch.

- bfloat16 / float16 values-only max compares the stored bit patterns as int16 (no widening):
  signed max for windows holding a non-negative value, signed min for all-negative windows, and
  the largest magnitude to find NaN. The inputs hold what breaks such a scheme: NaN of both
  signs, +-0, +-inf, subnormals, windows of negatives only, of -inf only and of -0 only.
- Max and average calls that stream through memory prefetch the next output row's input rows
  (input and output above half the last-level cache) and store with non-temporal stores where
  the output is aligned (above the whole cache). CNNEXT_POOL_STREAM=1 forces that path on small inputs, so every ISA, dtype, block
  and alignment case is compared with the cached path and with torch."""
import pytest
import torch
import torch.nn.functional as F

import cnnext.functional as CF
from conftest import assert_close
from test_pool_lowp import _same_values

ISAS = ["portable", "avx2", "avx512"]
HALF = [torch.bfloat16, torch.float16]
WINDOWS = [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2),
           dict(kernel_size=3, stride=2, ceil_mode=True), dict(kernel_size=3, stride=1, padding=1),
           dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1)),
           dict(kernel_size=5, stride=3, padding=2, ceil_mode=True)]
# At 32 int16 lanes (AVX-512) C = 40, 72, 137 and 300 reach the blocks of 1, 2 and 4 vectors and
# the overlapping last vector; at 16 lanes (AVX2) the same counts do; C = 19 stays on the float
# path (fewer channels than two float vectors) and leaves every output unaligned.
CHANNELS = [19, 40, 72, 137, 300]


def _special_input(dtype, channels, shape_hw=(9, 10), seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-40, 40, (2, channels, *shape_hw), generator=gen).to(torch.float64) / 8
    flat = x.view(-1)
    pick = torch.rand(flat.shape, generator=gen)
    flat[pick < 0.02] = float("nan")
    flat[(pick >= 0.02) & (pick < 0.04)] = -float("nan")  # sign bit set: the lowest int16 keys
    flat[(pick >= 0.04) & (pick < 0.07)] = float("-inf")
    flat[(pick >= 0.07) & (pick < 0.09)] = float("inf")
    flat[(pick >= 0.09) & (pick < 0.14)] = -0.0
    flat[(pick >= 0.14) & (pick < 0.17)] = 1e-40 if dtype == torch.bfloat16 else 1e-7  # subnormal
    x = x.to(dtype)
    x[0, :, :3] = -x[0, :, :3].abs()  # windows of negatives only (NaN sign bits set there too)
    x[1, : channels // 2, 2:5] = float("-inf")  # windows of -inf only
    x[1, channels // 2:, 4:7] = -0.0  # windows of -0 only
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("channels", CHANNELS)
def test_half_bit_pattern_max_matches_torch(monkeypatch, isa, dtype, channels):
    monkeypatch.setenv("CNNEXT_ISA", isa)
    x = _special_input(dtype, channels)
    for args in WINDOWS:
        with torch.no_grad():
            out = CF.max_pool2d(x, **args)
            ref = F.max_pool2d(x, **args)
        _same_values(out, ref)
        # Every -0 / +0 result is a zero of either sign (torch keeps the window's first of
        # equal zeros); everything else is bit-identical apart from NaN payloads.
        ordered = ~ref.isnan()
        assert torch.equal(out[ordered], ref[ordered])
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32] + HALF)
@pytest.mark.parametrize("channels", [19, 64, 137])
def test_streaming_forward_matches_cached_forward(monkeypatch, isa, dtype, channels):
    """The streaming path (prefetch, non-temporal stores where aligned, a fence per task) gives
    the cached path's values and indices, with and without indices; C = 19 leaves the stores
    unaligned (plain stores), 64 aligned, 137 mixed with an overlapping last block."""
    monkeypatch.setenv("CNNEXT_ISA", isa)
    x = _special_input(dtype, channels, shape_hw=(11, 13), seed=1)
    for args in WINDOWS:
        results = {}
        for mode in ("0", "1"):
            monkeypatch.setenv("CNNEXT_POOL_STREAM", mode)
            with torch.no_grad():
                values = CF.max_pool2d(x, **args)
            out, idx = CF.max_pool2d(x, return_indices=True, **args)
            results[mode] = (values, out, idx)
        ref, ref_idx = F.max_pool2d(x, return_indices=True, **args)
        for values, out, idx in results.values():
            _same_values(values, ref)
            _same_values(out, ref)
            assert torch.equal(idx, ref_idx), args


AVG_WINDOWS = [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
               dict(kernel_size=3, stride=2, ceil_mode=True), dict(kernel_size=(3, 2), stride=(2, 1))]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32] + HALF)
@pytest.mark.parametrize("channels", [19, 64, 137])
def test_streaming_average_matches_cached_average(monkeypatch, isa, dtype, channels):
    """Average pooling's streaming path sums in the same order as its cached path (bit-equal
    results), both within the dtype's rounding of torch."""
    monkeypatch.setenv("CNNEXT_ISA", isa)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, channels, 11, 13, generator=gen).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    for args in AVG_WINDOWS:
        results = []
        for mode in ("0", "1"):
            monkeypatch.setenv("CNNEXT_POOL_STREAM", mode)
            results.append(CF.avg_pool2d(x, **args))
        assert torch.equal(results[0], results[1]), args
        assert_close(results[1], F.avg_pool2d(x, **args), dtype)
        assert results[1].is_contiguous(memory_format=torch.channels_last)


def test_large_call_streams_and_matches_torch():
    """A call moving more than this machine's 32 MiB last-level cache (40 MiB of float32 input)
    prefetches and stores around the caches by itself (CNNEXT_POOL_STREAM unset)."""
    x = torch.randn(4, 160, 128, 128).contiguous(memory_format=torch.channels_last)
    x.permute(0, 2, 3, 1).view(-1)[::997] = float("nan")  # NHWC memory, viewed flat
    with torch.no_grad():
        _same_values(CF.max_pool2d(x, 3, 2, 1), F.max_pool2d(x, 3, 2, 1))
    out, idx = CF.max_pool2d(x, 3, 2, 1, return_indices=True)
    ref, ref_idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    _same_values(out, ref)
    assert torch.equal(idx, ref_idx)
    assert_close(CF.avg_pool2d(x, 2), F.avg_pool2d(x, 2), equal_nan=True)

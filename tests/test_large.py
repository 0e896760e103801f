"""64-bit sizes: tensors past 2^31 elements, and shapes whose sizes overflow int64.

The large tests need several GiB and run in CI (24 GiB machine); they skip themselves where
less memory is available (psutil) and can be deselected with -m 'not large'. Results are
compared with torch on slices (no second full-size copy)."""
import time

import psutil
import pytest
import torch
import torch.nn.functional as F

import cnnext
from conftest import assert_close

GiB = 1 << 30
INT32_LIMIT = 1 << 31
has_pooling = hasattr(cnnext.functional, "max_pool2d")
fn = cnnext.functional


def needs_memory(gib):
    available = psutil.virtual_memory().available
    return pytest.mark.skipif(
        available < gib * GiB,
        reason=f"needs ~{gib} GiB available, this machine has {available / GiB:.1f} GiB")


def peak_rss():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---- pooling over more than 2^31 elements --------------------------------------------------
# 9 planes of 16385^2: 2.42e9 float32 elements (9.7 GB); the last planes start past 2^31, so
# any int32 offset ((n*C + c)*H*W) wraps. Max pool 4x4/4 with indices adds 1.8 GB.
POOL_SHAPE = (3, 3, 16385, 16385)


def make_huge_input():
    plane = torch.rand(POOL_SHAPE[2:])
    x = torch.empty(POOL_SHAPE)
    for i, view in enumerate(x.view(-1, *POOL_SHAPE[2:])):
        torch.add(plane, i, out=view)  # each plane distinct: a wrong plane offset shows
    return x


def sampled_planes():
    n, c = POOL_SHAPE[:2]
    return [(0, 0), (1, 1), (n - 1, c - 1)]  # first, middle, and the last (offset > 2^31)


@pytest.mark.large
@needs_memory(20)
@pytest.mark.skipif(not has_pooling, reason="pooling not built")
class TestPoolingPastInt32Elements:
    """Peak ~12 GiB: input 9.7 GB, max output + indices 1.8 GB, avg output 0.6 GB. The input
    is shared by the class and freed before the conv tests below."""

    @pytest.fixture(scope="class")
    def huge_input(self):
        x = make_huge_input()
        yield x
        del x

    def test_max_and_avg_pool(self, huge_input):
        assert huge_input.numel() > INT32_LIMIT
        start = time.perf_counter()
        out, idx = fn.max_pool2d(huge_input, 4, 4, return_indices=True)
        avg = fn.avg_pool2d(huge_input, (3, 5), (4, 4), padding=1, ceil_mode=True,
                            count_include_pad=False)
        elapsed = time.perf_counter() - start
        for n, c in sampled_planes():
            plane = huge_input[n:n + 1, c:c + 1]
            ref, ref_idx = F.max_pool2d(plane, 4, 4, return_indices=True)
            assert torch.equal(out[n, c], ref[0, 0])
            assert torch.equal(idx[n, c], ref_idx[0, 0])
            ref_avg = F.avg_pool2d(plane, (3, 5), (4, 4), padding=1, ceil_mode=True,
                                   count_include_pad=False)
            assert_close(avg[n, c], ref_avg[0, 0])
        print(f"\npooling {POOL_SHAPE}: {elapsed:.1f}s, peak RSS {peak_rss() / GiB:.1f} GiB")

    def test_adaptive_pools(self, huge_input):
        out = fn.adaptive_avg_pool2d(huge_input, (7, 9))
        mx, idx = fn.adaptive_max_pool2d(huge_input, (7, 9), return_indices=True)
        for n, c in sampled_planes():
            plane = huge_input[n:n + 1, c:c + 1]
            # Against float64: windows of 4 million elements, where torch's own float32 sum
            # (one running total) is off by about 1%.
            ref_avg = F.adaptive_avg_pool2d(plane.double(), (7, 9))[0, 0].float()
            assert_close(out[n, c], ref_avg)
            ref, ref_idx = F.adaptive_max_pool2d(plane, (7, 9), return_indices=True)
            assert torch.equal(mx[n, c], ref[0, 0])
            assert torch.equal(idx[n, c], ref_idx[0, 0])


# ---- conv whose im2col matrix of one image exceeds 2^31 elements --------------------------
# 32 channels, 3x3 kernel, 2758x2758 output: 288 x 7.6e6 = 2.19e9 column elements (8.8 GB if
# materialised whole, which a chunked workspace does not do). Input 0.97 GB, output 61 MB.
CONV_IN = (1, 32, 2760, 2760)
CONV_W = (2, 32, 3, 3)


def bands(out_rows, count=3, height=64):
    """First, middle and last bands of output rows."""
    starts = [0, out_rows // 2, out_rows - height]
    return [(s, s + height) for s in starts[:count]]


@pytest.mark.large
@needs_memory(16)
def test_conv_im2col_past_int32_elements():
    _, c, h, w_ = CONV_IN
    kh, kw = CONV_W[2:]
    out_h, out_w = h - kh + 1, w_ - kw + 1
    assert c * kh * kw * out_h * out_w > INT32_LIMIT
    x = torch.randn(CONV_IN)
    w = torch.randn(CONV_W, requires_grad=True)
    b = torch.randn(CONV_W[0], requires_grad=True)
    start = time.perf_counter()
    out = fn.conv2d(x, w, b)
    grad = torch.randn(out.shape)
    gw, gb = torch.autograd.grad(out, (w, b), grad)
    elapsed = time.perf_counter() - start
    assert out.shape == (1, CONV_W[0], out_h, out_w)
    # Every band of output rows uses every row of the column matrix, whose last rows lie past
    # 2^31; output row r depends on input rows r .. r + kh - 1.
    for r0, r1 in bands(out_h):
        ref = F.conv2d(x[:, :, r0:r1 + kh - 1], w.detach(), b.detach())
        assert_close(out[:, :, r0:r1], ref)
    # grad_weight sums over every output position: compare with torch's, summed band by band.
    ref_gw = torch.zeros_like(gw)
    band = 512
    for r0 in range(0, out_h, band):
        r1 = min(out_h, r0 + band)
        wd = w.detach().requires_grad_()
        ref = F.conv2d(x[:, :, r0:r1 + kh - 1], wd)
        (g,) = torch.autograd.grad(ref, wd, grad[:, :, r0:r1])
        ref_gw += g
    scale = ref_gw.abs().max().item()
    assert_close(gw, ref_gw, rtol=1e-3, atol=1e-4 * scale)
    # float32 sums of 7.6e6 terms in different orders: error bounded by ~n*eps*sum|g|.
    ref_gb = grad.double().sum(dim=(0, 2, 3)).float()
    assert_close(gb, ref_gb, rtol=1e-4, atol=2e-6 * grad.abs().sum().item())
    print(f"\nconv {CONV_IN} * {CONV_W}: forward + weight/bias grads {elapsed:.1f}s, "
          f"peak RSS {peak_rss() / GiB:.1f} GiB")


@pytest.mark.large
@needs_memory(16)
def test_conv_grad_input_im2col_past_int32_elements():
    _, c, h, w_ = CONV_IN
    kh = CONV_W[2]
    x = torch.randn(CONV_IN, requires_grad=True)
    w = torch.randn(CONV_W)
    out = fn.conv2d(x, w)
    grad = torch.randn(out.shape)
    (gx,) = torch.autograd.grad(out, x, grad)
    del out
    # Input rows r0 + kh - 1 .. r1 - 1 receive gradient only from output rows r0 .. r1 - 1.
    for r0, r1 in bands(h - kh + 1):
        xs = x.detach()[:, :, r0:r1 + kh - 1].requires_grad_()
        (ref,) = torch.autograd.grad(F.conv2d(xs, w), xs, grad[:, :, r0:r1])
        assert_close(gx[:, :, r0 + kh - 1:r1], ref[:, :, kh - 1:r1 - r0])


# ---- sizes that overflow int64: a clear error, not a crash ---------------------------------
def huge_view(*shape):
    """A tensor of any size backed by one element (all strides 0)."""
    return torch.zeros(1).expand(*shape)


def test_conv_output_size_overflowing_int64_raises():
    x = huge_view(2**30, 1, 2**16, 2**16)  # 2^62 elements: representable
    w = torch.randn(4, 1, 1, 1)  # output 2^64 elements: not
    with pytest.raises(RuntimeError, match=r"cnnext\.conv2d: .*overflow"):
        fn.conv2d(x, w)


def test_conv_workspace_size_overflowing_int64_raises():
    x = huge_view(1, 2**28, 2**17, 2**17)  # 2^62 elements
    w = huge_view(1, 2**28, 3, 3)  # columns: 2^28 * 9 * (2^17 - 2)^2 > 2^63
    with pytest.raises(RuntimeError, match=r"cnnext\.conv2d: .*overflow"):
        fn.conv2d(x, w)


@pytest.mark.skipif(not has_pooling, reason="pooling not built")
@pytest.mark.parametrize("op", ["adaptive_avg_pool2d", "adaptive_max_pool2d"])
def test_pool_output_size_overflowing_int64_raises(op):
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises(RuntimeError, match=r"cnnext|overflow"):
        getattr(fn, op)(x, (2**40, 2**40))  # 2^80 output elements

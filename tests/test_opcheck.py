"""torch.library.opcheck on every cnnext operator (schema, fake kernel, autograd registration,
AOT dispatch), and proof that the Python fake kernels give the real kernels' shapes, dtypes and
strides over many configurations."""
import itertools

import pytest
import torch

import cnnext  # noqa: F401
from conftest import assert_close

ops = torch.ops.cnnext


@pytest.fixture(autouse=True)
def _one_thread():
    # opcheck runs each sample many times on tiny tensors; fork/join would dominate.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _t(*shape, dtype=torch.float64, grad=True, **kw):
    return torch.randn(*shape, dtype=dtype, **kw).requires_grad_(grad)


# (input, weight, bias, stride, padding, dilation, groups)
CONV_SAMPLES = [
    (_t(2, 3, 6, 5), _t(4, 3, 3, 3), _t(4), [1, 1], [1, 1], [1, 1], 1),
    (_t(1, 4, 7, 7), _t(4, 2, 2, 3), None, [2, 1], [0, 2], [1, 2], 2),
    (_t(3, 3, 5, 5, dtype=torch.float32), _t(3, 1, 3, 3, dtype=torch.float32),
     _t(3, dtype=torch.float32), [1, 2], [1, 1], [2, 1], 3),
    (_t(0, 2, 4, 4), _t(2, 2, 1, 1), _t(2), [1, 1], [0, 0], [1, 1], 1),
    (_t(2, 2, 4, 4).to(memory_format=torch.channels_last), _t(3, 2, 1, 1), None,
     [1, 1], [0, 0], [1, 1], 1),
    (_t(2, 2, 6, 4)[:, :, ::2], _t(2, 2, 2, 2), _t(2), [3, 3], [2, 2], [1, 1], 1),
]


@pytest.mark.parametrize("sample", range(len(CONV_SAMPLES)))
def test_opcheck_conv2d(sample):
    torch.library.opcheck(ops.conv2d.default, CONV_SAMPLES[sample])


MASKS = [[True, True, True], [True, False, False], [False, True, False], [False, False, True],
         [False, True, True], [False, False, False]]


# Every mask at least once, the full one on every sample (opcheck is slow: ~1 s a sample).
BACKWARD_SAMPLES = [(0, MASKS[0]), (1, MASKS[0]), (2, MASKS[0]), (3, MASKS[0]),
                    (0, MASKS[1]), (1, MASKS[2]), (2, MASKS[3]), (0, MASKS[4]), (1, MASKS[5])]


@pytest.mark.parametrize(
    "sample,mask", BACKWARD_SAMPLES,
    ids=[f"{s}-{''.join('1' if m else '0' for m in k)}" for s, k in BACKWARD_SAMPLES],
)
def test_opcheck_conv2d_backward(sample, mask):
    x, w, _, stride, padding, dilation, groups = CONV_SAMPLES[sample]
    with torch.no_grad():
        out = ops.conv2d(x, w, None, stride, padding, dilation, groups)
    grad_output = _t(*out.shape, dtype=out.dtype)
    if sample == 1:  # zero strides, as autograd may hand over
        grad_output = _t(out.shape[-1], dtype=out.dtype).expand(out.shape)
    torch.library.opcheck(
        ops.conv2d_backward.default,
        (grad_output, x, w, stride, padding, dilation, groups, mask),
    )


GEMM_SAMPLES = [
    (torch.randn(5, 7), torch.randn(7, 3), False, False, 1.0, 0.0, None),
    (torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64), True, False,
     0.5, 2.0, torch.randn(5, 3, dtype=torch.float64)),
    (torch.randn(5, 7), torch.randn(3, 7), False, True, -1.0, 1.0, torch.randn(5, 3)),
    (torch.randn(70, 300), torch.randn(300, 270), False, False, 1.0, 0.0, None),  # > one block
    (torch.randn(4, 0), torch.randn(0, 6), False, False, 1.0, 0.0, None),
]


@pytest.mark.parametrize("sample", range(len(GEMM_SAMPLES)))
def test_opcheck_gemm(sample):
    args = GEMM_SAMPLES[sample] + ("auto",)
    torch.library.opcheck(ops.gemm.default, args)
    a, b, ta, tb, alpha, beta, c = GEMM_SAMPLES[sample]
    expected = alpha * ((a.t() if ta else a) @ (b.t() if tb else b))
    if c is not None:
        expected = expected + beta * c
    assert_close(ops.gemm(*args), expected)


# ---- fake kernels agree with the real ones ----------------------------------------------
def _conv_configs():
    """A few hundred valid configurations around the edges of the output-size formula."""
    sizes = [(1, 1), (2, 5), (7, 6), (9, 13)]
    kernels = [(1, 1), (2, 3), (3, 3), (5, 1)]
    strides = [(1, 1), (2, 3), (3, 1)]
    paddings = [(0, 0), (1, 2), (3, 0)]
    dilations = [(1, 1), (2, 1), (1, 3)]
    for size, k, s, p, d in itertools.product(sizes, kernels, strides, paddings, dilations):
        if all(size[i] + 2 * p[i] >= d[i] * (k[i] - 1) + 1 for i in range(2)):
            yield size, k, s, p, d


def _same_layout(fake, real):
    assert fake.shape == real.shape and fake.dtype == real.dtype
    if real.numel() > 0:
        assert fake.stride() == real.stride()


def test_fake_conv2d_matches_real_kernel():
    from torch._subclasses.fake_tensor import FakeTensorMode

    count = 0
    for (h, w), k, s, p, d in _conv_configs():
        for batch, groups in ((2, 1), (0, 2), (1, 4)):
            x = torch.randn(batch, 4, h, w)
            wt = torch.randn(8, 4 // groups, *k)
            b = torch.randn(8)
            args = (list(s), list(p), list(d), groups)
            real = ops.conv2d(x, wt, b, *args)
            with FakeTensorMode() as mode:
                fake = ops.conv2d(mode.from_tensor(x), mode.from_tensor(wt), mode.from_tensor(b), *args)
            _same_layout(fake, real)
            meta = ops.conv2d(x.to("meta"), wt.to("meta"), None, *args)
            _same_layout(meta, real)
            count += 1
    assert count > 300


def test_fake_conv2d_backward_matches_real_kernel():
    from torch._subclasses.fake_tensor import FakeTensorMode

    count = 0
    for i, ((h, w), k, s, p, d) in enumerate(_conv_configs()):
        if i % 4:  # a quarter of the configurations, every mask on each
            continue
        x, wt = torch.randn(2, 4, h, w), torch.randn(6, 2, *k)
        args = (list(s), list(p), list(d), 2)
        go = torch.randn(ops.conv2d(x, wt, None, *args).shape)
        for mask in MASKS:
            real = ops.conv2d_backward(go, x, wt, *args, mask)
            with FakeTensorMode() as mode:
                fake = ops.conv2d_backward(
                    mode.from_tensor(go), mode.from_tensor(x), mode.from_tensor(wt), *args, mask
                )
            for f, r in zip(fake, real):
                _same_layout(f, r)
            count += 1
    assert count > 300

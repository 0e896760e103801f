"""The pooling operators themselves: opcheck (schema, fake kernels incl. strides, autograd
registration, AOT dispatch) and errors matching torch's."""
import pytest
import torch
import torch.nn.functional as F

import cnnext.functional as CF

ops = torch.ops.cnnext


def _x(shape, channels_last=False, dtype=torch.float64, grad=True):
    n = 1
    for s in shape:
        n *= s
    x = (torch.randperm(n, dtype=torch.float64) / max(n, 1)).reshape(shape).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return x.requires_grad_(grad and dtype.is_floating_point)


FORMATS = [False, True]
MAX_ARGS = [([3, 3], [2, 2], [1, 1], [1, 1], True), ([2, 3], [1, 2], [1, 0], [2, 1], False),
            ([2, 2], [], [0, 0], [1, 1], False)]
AVG_ARGS = [([3, 3], [2, 2], [1, 1], True, False, None), ([2, 3], [1, 2], [1, 1], False, True, 5),
            ([2, 2], [], [0, 0], False, True, None)]


def _max_samples():
    for cl in FORMATS:
        for a in MAX_ARGS:
            yield (_x((2, 3, 7, 6), cl),) + a
    yield (_x((0, 3, 7, 6)),) + MAX_ARGS[0]
    yield (_x((1, 1, 1, 1)), [1, 1], [1, 1], [0, 0], [1, 1], False)


@pytest.mark.parametrize("sample", list(_max_samples()), ids=lambda s: f"{list(s[0].shape)}-{s[1:]}")
def test_opcheck_max_pool2d(sample):
    torch.library.opcheck(ops.max_pool2d, sample)
    x = sample[0].detach()
    out, idx = ops.max_pool2d(x, *sample[1:])
    g = torch.randn_like(out).requires_grad_()
    torch.library.opcheck(ops.max_pool2d_backward, (g, x, idx) + sample[1:])


@pytest.mark.parametrize("cl", FORMATS)
@pytest.mark.parametrize("args", AVG_ARGS, ids=str)
def test_opcheck_avg_pool2d(cl, args):
    x = _x((2, 3, 7, 6), cl)
    torch.library.opcheck(ops.avg_pool2d, (x,) + args)
    out = ops.avg_pool2d(x.detach(), *args)
    g = torch.randn_like(out).requires_grad_()
    torch.library.opcheck(ops.avg_pool2d_backward, (g, x.detach()) + args)


@pytest.mark.parametrize("cl", FORMATS)
@pytest.mark.parametrize("size", [[3, 2], [1, 1], [9, 4]], ids=str)
def test_opcheck_adaptive(cl, size):
    x = _x((2, 3, 7, 6), cl)
    torch.library.opcheck(ops.adaptive_avg_pool2d, (x, size))
    torch.library.opcheck(ops.adaptive_max_pool2d, (x, size))
    xd = x.detach()
    out = ops.adaptive_avg_pool2d(xd, size)
    torch.library.opcheck(ops.adaptive_avg_pool2d_backward,
                          (torch.randn_like(out).requires_grad_(), xd))
    out, idx = ops.adaptive_max_pool2d(xd, size)
    torch.library.opcheck(ops.adaptive_max_pool2d_backward,
                          (torch.randn_like(out).requires_grad_(), xd, idx))


def test_opcheck_integer_and_empty_inputs():
    xi = torch.randint(-9, 9, (2, 3, 5, 5))
    torch.library.opcheck(ops.max_pool2d, (xi, [2, 2], [2, 2], [1, 1], [1, 1], True))
    torch.library.opcheck(ops.avg_pool2d, (xi, [3, 3], [1, 1], [1, 1], False, True, None))
    torch.library.opcheck(ops.adaptive_avg_pool2d, (_x((2, 0, 5, 5)), [2, 2]))


# ---- errors: same exception class as torch, message naming the argument ---------------------
X = torch.randn(1, 2, 8, 8)
ERRORS = [
    # (our call, torch's call, words our message must contain)
    ("max_pool2d", dict(kernel_size=0, stride=1), "kernel size"),
    ("max_pool2d", dict(kernel_size=(3, -1), stride=1), "kernel"),
    ("max_pool2d", dict(kernel_size=2, stride=0), "stride"),
    ("max_pool2d", dict(kernel_size=2, stride=-1), "stride"),
    ("max_pool2d", dict(kernel_size=0), "stride"),
    ("max_pool2d", dict(kernel_size=3, padding=2), "pad"),
    ("max_pool2d", dict(kernel_size=3, padding=(0, 2)), "pad"),
    ("max_pool2d", dict(kernel_size=3, padding=2, dilation=2), "pad"),
    ("max_pool2d", dict(kernel_size=3, padding=3, dilation=2), "pad"),
    ("max_pool2d", dict(kernel_size=2, padding=-1), "pad"),
    ("max_pool2d", dict(kernel_size=2, dilation=0), "dilation"),
    ("max_pool2d", dict(kernel_size=(2, 2, 2)), "kernel_size"),
    ("max_pool2d", dict(kernel_size=9), "Output size is too small"),
    ("avg_pool2d", dict(kernel_size=0, stride=1), "kernel size"),
    ("avg_pool2d", dict(kernel_size=2, stride=0), "stride"),
    ("avg_pool2d", dict(kernel_size=3, padding=2), "pad"),
    ("avg_pool2d", dict(kernel_size=(3, 1), padding=1), "pad"),
    ("avg_pool2d", dict(kernel_size=2, divisor_override=0), "divisor"),
    ("avg_pool2d", dict(kernel_size=9), "Output size is too small"),
    ("adaptive_avg_pool2d", dict(output_size=-1), "output_size"),
    ("adaptive_avg_pool2d", dict(output_size=(1, 2, 3)), "output_size"),
]


@pytest.mark.parametrize("name,kwargs,words", ERRORS, ids=str)
def test_errors_match_torch(name, kwargs, words):
    with pytest.raises(Exception) as ref:
        getattr(F, name)(X, **kwargs)
    with pytest.raises(Exception) as ours:
        getattr(CF, name)(X, **kwargs)
    assert type(ours.value) is type(ref.value), (ours.value, ref.value)
    message = str(ours.value)
    assert f"cnnext.{name}" in message and words in message, message


BAD_INPUTS = [
    ("rank 2", torch.randn(4, 4)),
    ("rank 5", torch.randn(1, 1, 1, 4, 4)),
    ("zero channels", torch.randn(1, 0, 4, 4)),
    ("zero height", torch.randn(1, 1, 0, 4)),
    ("batch-less zero channels", torch.randn(0, 4, 4)),
    ("bool", torch.zeros(1, 1, 4, 4, dtype=torch.bool)),
    ("int8", torch.zeros(1, 1, 4, 4, dtype=torch.int8)),
    ("int64", torch.zeros(1, 1, 4, 4, dtype=torch.int64)),
    ("complex", torch.zeros(1, 1, 4, 4, dtype=torch.complex64)),
]
CALLS = [
    ("max_pool2d", lambda f, t: f.max_pool2d(t, 2)),
    ("avg_pool2d", lambda f, t: f.avg_pool2d(t, 2)),
    ("adaptive_avg_pool2d", lambda f, t: f.adaptive_avg_pool2d(t, 2)),
    ("adaptive_max_pool2d", lambda f, t: f.adaptive_max_pool2d(t, 2)),
]


@pytest.mark.parametrize("what,x", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
@pytest.mark.parametrize("name,call", CALLS, ids=[c[0] for c in CALLS])
def test_bad_inputs_follow_torch(what, x, name, call):
    """Where torch accepts the input, so must we (with the same result); where it raises,
    we raise the same class with a cnnext message."""
    try:
        ref = call(F, x)
    except Exception as e:  # noqa: BLE001
        with pytest.raises(type(e)) as ours:
            call(CF, x)
        assert type(ours.value) is type(e)
        assert "cnnext." in str(ours.value), str(ours.value)
        return
    out = call(CF, x)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert torch.equal(out, ref)


def test_backward_ops_reject_mismatched_arguments():
    x = torch.randn(1, 2, 6, 6)
    out, idx = ops.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="grad_output"):
        ops.max_pool2d_backward(torch.randn(1, 2, 4, 4), x, idx, [2, 2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="indices"):
        ops.max_pool2d_backward(out, x, idx.int(), [2, 2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="indices"):  # out of range: an error, not a write
        ops.max_pool2d_backward(out, x, idx + 100, [2, 2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="grad_output"):
        ops.avg_pool2d_backward(out.double(), x, [2, 2], [2, 2], [0, 0], False, True, None)
    with pytest.raises(RuntimeError, match="indices"):
        ops.adaptive_max_pool2d_backward(out, x, -idx - 1)

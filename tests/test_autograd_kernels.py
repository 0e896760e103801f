"""The C++ autograd kernels of the forward operators (csrc/autograd_*.cpp): the gradients they
record are exactly what the operators' backward ops return, no graph is recorded when none is
needed, double backward goes through the backward ops' own (Python) autograd, and the graph
node is the C++ one (not torch.library's Python wrapper)."""
import pytest
import torch

import cnnext  # noqa: F401  (registers the operators)

ops = torch.ops.cnnext


# ---- pooling ------------------------------------------------------------------------------
MAX_WINDOW = ([3, 2], [2, 2], [1, 0], [1, 2], True)  # kernel, stride, padding, dilation, ceil
AVG_WINDOW = ([3, 3], [2, 1], [1, 1], True, False, None)  # ..., ceil, count_include_pad, divisor


def _max_pool2d(x):
    return ops.max_pool2d(x, *MAX_WINDOW)


def _max_pool2d_backward(grad, x):
    _, indices = ops.max_pool2d(x.detach(), *MAX_WINDOW)
    return ops.max_pool2d_backward(grad, x.detach(), indices, *MAX_WINDOW)


def _adaptive_max_pool2d_backward(grad, x):
    _, indices = ops.adaptive_max_pool2d(x.detach(), [2, 3])
    return ops.adaptive_max_pool2d_backward(grad, x.detach(), indices)


# name -> (forward giving the differentiable output, the backward op called directly)
POOLS = {
    "max_pool2d": (lambda x: _max_pool2d(x)[0], _max_pool2d_backward),
    "max_pool2d_values": (lambda x: ops.max_pool2d_values(x, *MAX_WINDOW), _max_pool2d_backward),
    "avg_pool2d": (
        lambda x: ops.avg_pool2d(x, *AVG_WINDOW),
        lambda g, x: ops.avg_pool2d_backward(g, x.detach(), *AVG_WINDOW),
    ),
    "avg_pool2d_divisor": (
        lambda x: ops.avg_pool2d(x, [2, 2], [2, 2], [0, 0], False, True, 3),
        lambda g, x: ops.avg_pool2d_backward(g, x.detach(), [2, 2], [2, 2], [0, 0], False, True, 3),
    ),
    "adaptive_avg_pool2d": (
        lambda x: ops.adaptive_avg_pool2d(x, [2, 3]),
        lambda g, x: ops.adaptive_avg_pool2d_backward(g, x.detach()),
    ),
    "adaptive_max_pool2d": (
        lambda x: ops.adaptive_max_pool2d(x, [2, 3])[0],
        _adaptive_max_pool2d_backward,
    ),
}
POOL_CPP_NODES = {
    "max_pool2d": "MaxPool2dFunction",
    "max_pool2d_values": "MaxPool2dValuesFunction",
    "avg_pool2d": "AvgPool2dFunction",
    "avg_pool2d_divisor": "AvgPool2dFunction",
    "adaptive_avg_pool2d": "AdaptiveAvgPool2dFunction",
    "adaptive_max_pool2d": "AdaptiveMaxPool2dFunction",
}


def _pool_input(dtype=torch.float32, channels_last=False):
    x = torch.randn(2, 3, 7, 9, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_()


def _assert_cpp_node(y, function_name):
    # torch.library.register_autograd's node is "GeneratedBackwardFor_cnnext_<op>_defaultBackward";
    # a C++ torch::autograd::Function's is a CppFunction named after its Function.
    assert not type(y.grad_fn).__name__.startswith("GeneratedBackwardFor")
    assert y.grad_fn.name() == f"torch::autograd::CppNode<cnnext::{function_name}>"


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("name", POOLS)
def test_pool_grad_is_the_backward_op(name, channels_last):
    forward, backward = POOLS[name]
    x = _pool_input(channels_last=channels_last)
    y = forward(x)
    _assert_cpp_node(y, POOL_CPP_NODES[name])
    grad_out = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, grad_out)
    expected = backward(grad_out, x)
    assert torch.equal(grad, expected)
    assert grad.stride() == expected.stride()
    assert grad.is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.parametrize("name", POOLS)
def test_pool_records_nothing_without_grad(name):
    forward, _ = POOLS[name]
    x = _pool_input().detach()
    assert forward(x).grad_fn is None
    with torch.no_grad():
        assert forward(x.requires_grad_()).grad_fn is None


@pytest.mark.parametrize("name", POOLS)
def test_pool_double_backward(name):
    forward, _ = POOLS[name]
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(forward, (x,))


@pytest.mark.parametrize("name", POOLS)
def test_pool_create_graph(name):
    forward, backward = POOLS[name]
    x = _pool_input(torch.float64)
    y = forward(x)
    grad_out = torch.randn_like(y, requires_grad=True)
    (grad,) = torch.autograd.grad(y, x, grad_out, create_graph=True)
    assert grad.grad_fn is not None  # the backward op's own autograd recorded it
    assert torch.equal(grad, backward(grad_out.detach(), x))
    # Linear in grad_out: d<grad, v>/d(grad_out) is the forward's adjoint applied to v.
    v = torch.randn_like(grad)
    (gg,) = torch.autograd.grad(grad, grad_out, v)
    (expected,) = torch.autograd.grad(forward(x), x, gg, retain_graph=False)
    assert torch.allclose((expected * v).sum(), (gg * gg).sum())


@pytest.mark.parametrize("op", ["max_pool2d", "adaptive_max_pool2d"])
def test_max_indices_not_differentiable(op):
    x = _pool_input()
    out, indices = _max_pool2d(x) if op == "max_pool2d" else ops.adaptive_max_pool2d(x, [2, 3])
    assert out.grad_fn is not None
    assert indices.grad_fn is None and not indices.requires_grad
    # Backward through the values alone, with no gradient made up for the indices.
    out.sum().backward()
    assert x.grad is not None


def test_pool_compiled_backward_matches_eager():
    # AOT autograd traces through the C++ autograd kernels (their Functions run on fake
    # tensors), then runs the recorded backward ops.
    import cnnext.functional as CF

    def f(x):
        return (CF.max_pool2d(x, 2).sum() + CF.avg_pool2d(x, 3, 2, 1).square().sum()
                + CF.adaptive_avg_pool2d(x, 1).sum() + CF.adaptive_max_pool2d(x, (2, 3)).sum())

    torch._dynamo.reset()
    x = torch.randn(2, 3, 8, 9, requires_grad=True)
    (expected,) = torch.autograd.grad(f(x), x)
    (got,) = torch.autograd.grad(torch.compile(f, fullgraph=True, backend="aot_eager")(x), x)
    torch.testing.assert_close(got, expected)


# ---- conv2d -------------------------------------------------------------------------------
CONV_PARAMS = ([2, 1], [1, 1], [1, 2], 2)  # stride, padding, dilation, groups


def _conv_inputs(dtype=torch.float32, bias=True, channels_last=False, grads=(True, True, True)):
    x = torch.randn(2, 4, 7, 8, dtype=dtype)
    w = torch.randn(6, 2, 3, 3, dtype=dtype)
    b = torch.randn(6, dtype=dtype) if bias else None
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for t, g in zip((x, w, b), grads):
        if t is not None:
            t.requires_grad_(g)
    return x, w, b


def _conv(x, w, b, relu=False):
    return ops.conv2d(x, w, b, *CONV_PARAMS, relu)


def _conv_grads(x, w, b, grad_out, relu=False):
    """What the backward op returns called directly, for the tensors requiring grad."""
    if relu:
        grad_out = grad_out * (_conv(x.detach(), w.detach(), b, True) > 0).to(grad_out.dtype)
    mask = [x.requires_grad, w.requires_grad, b is not None and b.requires_grad]
    grads = ops.conv2d_backward(grad_out, x.detach(), w.detach(), *CONV_PARAMS, mask)
    return [g for g, m in zip(grads, mask) if m]


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_grads_are_the_backward_op(relu, bias, channels_last):
    x, w, b = _conv_inputs(bias=bias, channels_last=channels_last)
    y = _conv(x, w, b, relu)
    _assert_cpp_node(y, "Conv2dFunction")
    grad_out = torch.randn_like(y)
    wanted = [t for t in (x, w, b) if t is not None]
    grads = torch.autograd.grad(y, wanted, grad_out)
    expected = _conv_grads(x, w, b, grad_out, relu)
    assert len(grads) == len(expected)
    for got, want in zip(grads, expected):
        assert torch.equal(got, want)
        assert got.stride() == want.stride()
    # channels_last inputs give channels_last grad_input, as the backward op does.
    assert grads[0].is_contiguous(memory_format=torch.channels_last) == channels_last


def test_conv_only_weight_requires_grad():
    x, w, b = _conv_inputs(grads=(False, True, False))
    y = _conv(x, w, b)
    grad_out = torch.randn_like(y)
    y.backward(grad_out)
    assert x.grad is None and b.grad is None
    assert torch.equal(w.grad, _conv_grads(x, w, b, grad_out)[0])


def test_conv_records_nothing_without_grad():
    x, w, b = _conv_inputs(grads=(False, False, False))
    assert _conv(x, w, b).grad_fn is None
    with torch.no_grad():
        assert _conv(x.requires_grad_(), w, b).grad_fn is None


def test_conv_relu_masks_zero_outputs_like_torch_relu():
    # Half the output channels are exactly 0 (zero weights, zero bias): torch.relu passes no
    # gradient there (strictly positive), and neither does the fused flag.
    x, w, b = _conv_inputs(dtype=torch.float64)
    with torch.no_grad():
        w[:3].zero_()
        b[:3].zero_()
    fused = _conv(x, w, b, relu=True)
    unfused = torch.relu(_conv(x, w, b))
    assert (fused[:, :3] == 0).all()
    grad_out = torch.randn_like(fused)
    got = torch.autograd.grad(fused, (x, w, b), grad_out)
    want = torch.autograd.grad(unfused, (x, w, b), grad_out)
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    assert (got[2][:3] == 0).all() and (got[1][:3] == 0).all()


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_double_backward(relu, bias):
    x = torch.randn(1, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True) if bias else None
    args = (x, w, b) if bias else (x, w)
    assert torch.autograd.gradgradcheck(
        lambda x_, w_, b_=None: _conv(x_, w_, b_, relu), args)


def test_conv_create_graph():
    x, w, b = _conv_inputs(dtype=torch.float64)
    y = _conv(x, w, b, relu=True)
    grad_out = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, w, b), grad_out, create_graph=True)
    for got, want in zip(grads, _conv_grads(x, w, b, grad_out, relu=True)):
        assert got.grad_fn is not None  # conv2d_backward's own autograd recorded it
        assert torch.equal(got, want)
    # Second order: d(sum(grad_input * v))/dw, through conv2d_backward's autograd.
    v = torch.randn_like(x)
    (gw,) = torch.autograd.grad((grads[0] * v).sum(), w)
    assert gw.shape == w.shape and torch.isfinite(gw).all()

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

"""gradcheck and gradgradcheck of cnnext.functional.conv2d in float64: the analytic first and
second derivatives (our backward operators and their own autograd) against finite differences."""
import pytest
import torch

import cnnext

CF = cnnext.functional.conv2d


@pytest.fixture(autouse=True)
def _one_thread():
    # Finite differences call the operator hundreds of times on tiny tensors, where the
    # fork/join of a parallel region costs more than the arithmetic; threading itself is
    # covered by test_conv2d.py and test_determinism.py.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# (input shape, weight shape, bias, stride, padding, dilation, groups)
CONFIGS = [
    ((2, 3, 5, 5), (2, 3, 3, 3), True, 1, 0, 1, 1),
    ((1, 2, 6, 5), (3, 2, 3, 2), False, 1, 1, 1, 1),
    ((2, 2, 7, 6), (2, 2, 3, 3), True, 2, 1, 1, 1),
    ((1, 2, 7, 7), (2, 2, 2, 2), True, 3, 0, 1, 1),
    ((2, 1, 6, 8), (2, 1, 3, 3), False, (1, 2), (0, 2), 1, 1),
    ((1, 2, 7, 7), (2, 2, 3, 3), True, 1, 2, 2, 1),
    ((1, 2, 5, 9), (2, 2, 2, 3), False, 1, 0, (1, 3), 1),
    ((2, 4, 5, 5), (4, 2, 3, 3), True, 1, 1, 1, 2),
    ((1, 4, 6, 6), (6, 2, 1, 3), False, (2, 1), (1, 0), 1, 2),
    ((2, 3, 5, 6), (3, 1, 3, 3), True, 1, 1, 1, 3),  # depthwise
    ((1, 3, 6, 5), (6, 1, 3, 2), False, 1, "same", 1, 3),  # depthwise x2, even kernel
    ((1, 2, 5, 5), (2, 2, 3, 3), True, 1, "same", 1, 1),
    ((1, 2, 6, 5), (3, 2, 2, 2), False, 1, "same", 1, 1),  # odd total: asymmetric padding
    ((1, 2, 7, 6), (2, 2, 3, 2), True, 1, "same", (2, 3), 1),
    ((1, 2, 6, 6), (2, 2, 3, 3), False, 2, "valid", 1, 1),
    ((3, 5, 5), (2, 3, 3, 3), True, 1, 1, 1, 1),  # batch-less
    ((2, 6, 4), (4, 1, 2, 2), False, (1, 2), 0, 1, 2),  # batch-less, groups
    ((1, 2, 1, 1), (3, 2, 1, 1), True, 1, 0, 1, 1),  # 1x1 image, pointwise
    ((1, 2, 1, 1), (3, 2, 3, 3), False, 1, 1, 1, 1),  # 1x1 image, all padding around it
    ((2, 3, 4, 4), (2, 3, 1, 1), True, 2, 0, 1, 1),  # strided 1x1: not the pointwise shortcut
    ((1, 2, 8, 8), (2, 1, 3, 3), True, (3, 2), (1, 2), (2, 1), 2),
    ((0, 2, 5, 5), (2, 2, 3, 3), True, 1, 1, 1, 1),  # empty batch
]


def _inputs(cfg):
    in_shape, w_shape, bias = cfg[:3]
    x = torch.randn(in_shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(w_shape, dtype=torch.float64, requires_grad=True)
    b = torch.randn(w_shape[0], dtype=torch.float64, requires_grad=True) if bias else None
    return x, w, b


def _fn(cfg):
    stride, padding, dilation, groups = cfg[3:]

    def f(x, w, b=None):
        return CF(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)

    return f


def _ids(cfg):
    return f"in{list(cfg[0])}-w{list(cfg[1])}-b{int(cfg[2])}-s{cfg[3]}-p{cfg[4]}-d{cfg[5]}-g{cfg[6]}".replace(" ", "")


@pytest.mark.parametrize("cfg", CONFIGS, ids=[_ids(c) for c in CONFIGS])
def test_gradcheck(cfg):
    args = [t for t in _inputs(cfg) if t is not None]
    assert torch.autograd.gradcheck(_fn(cfg), args, fast_mode=False)


@pytest.mark.parametrize("cfg", CONFIGS, ids=[_ids(c) for c in CONFIGS])
def test_gradgradcheck(cfg):
    args = [t for t in _inputs(cfg) if t is not None]
    assert torch.autograd.gradgradcheck(_fn(cfg), args, fast_mode=True)


def test_second_derivative_of_only_some_inputs():
    # Double backward when only the input (not the weight) requires grad, and the reverse:
    # the backward operator's own backward must cope with a partial output_mask.
    x, w, b = _inputs(((1, 2, 5, 5), (2, 2, 3, 3), True))
    f = _fn(((), (), True, 1, 1, 1, 1))
    assert torch.autograd.gradgradcheck(lambda x_: f(x_, w.detach(), b), [x])
    assert torch.autograd.gradgradcheck(lambda w_: f(x.detach(), w_, None), [w])

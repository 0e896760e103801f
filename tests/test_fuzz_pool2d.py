"""Property-based tests of the cnnext pooling functions against torch.nn.functional.

Every pooling operator (max_pool2d, avg_pool2d, adaptive_avg_pool2d, adaptive_max_pool2d) on
random valid configurations (ceil_mode, count_include_pad, divisor_override, return_indices,
dilation, batch-less, channels_last, non-contiguous views): forward, indices and backward match
torch. Arbitrary configurations: cnnext raises exactly when torch raises (same class, "cnnext."
message) and never crashes. Budgets: tests/fuzz_settings.py (CI) or CNNEXT_FUZZ_EXAMPLES.
"""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st

import cnnext
from conftest import assert_close
from fuzz_settings import fuzz
from test_fuzz_conv2d import LAYOUTS, make_layout, torch_vs_cnnext

pytestmark = pytest.mark.skipif(
    not hasattr(cnnext.functional, "max_pool2d"), reason="pooling not built"
)

FLOAT_DTYPES = [torch.float32, torch.float64]
OPS = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d"]


def distinct_values(shape, dtype):
    """A random permutation of 0..numel-1 (scaled): no ties, so max indices and gradients are
    unambiguous and exact in float32/float64."""
    n = 1
    for s in shape:
        n *= s
    return (torch.randperm(n, dtype=torch.float64) / max(n, 1) - 0.5).reshape(shape).to(dtype)


def pair_or_int(draw, lo, hi):
    a, b = draw(st.integers(lo, hi)), draw(st.integers(lo, hi))
    return draw(st.sampled_from([a, (a, b), [a, b]])) if a == b else (a, b)


def pool_output_size(size, k, s, p, d, ceil_mode):
    span = size + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:  # the last window must start inside
        out -= 1
    return out


def every_window_touches_input(size, k, s, p, d, ceil_mode):
    """False when a dilated window falls wholly in the padding (its taps skip the input): torch
    then records an index past the plane and its backward writes out of bounds (heap
    corruption, torch 2.13); cnnext's backward raises. Valid configurations avoid it."""
    for o in range(pool_output_size(size, k, s, p, d, ceil_mode)):
        if not any(0 <= o * s - p + j * d < size for j in range(k)):
            return False
    return True


@st.composite
def valid_pool(draw, op):
    cfg = dict(op=op, batch=draw(st.sampled_from([None, 0, 1, 2])), c=draw(st.integers(1, 4)),
               dtype=draw(st.sampled_from(FLOAT_DTYPES)), layout=draw(st.sampled_from(LAYOUTS)))
    if op.startswith("adaptive"):
        cfg["h"], cfg["w"] = draw(st.integers(1, 12)), draw(st.integers(1, 12))
        size = lambda: draw(st.one_of(st.none(), st.integers(1, 14)))  # noqa: E731
        out = draw(st.sampled_from(["int", "pair"]))
        cfg["kwargs"] = dict(output_size=draw(st.integers(1, 14)) if out == "int" else (size(), size()))
        if op == "adaptive_max_pool2d":
            cfg["kwargs"]["return_indices"] = draw(st.booleans())
        return cfg
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    d = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if op == "max_pool2d" else (1, 1)
    # torch limits padding to half the kernel; k // 2 satisfies every rule torch has used.
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    eff = (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1)
    cfg["h"] = max(1, eff[0] - 2 * p[0] + draw(st.integers(0, 8)))
    cfg["w"] = max(1, eff[1] - 2 * p[1] + draw(st.integers(0, 8)))
    stride = draw(st.one_of(st.none(), st.integers(1, 4),
                            st.tuples(st.integers(1, 4), st.integers(1, 4))))
    kw = dict(kernel_size=k if k[0] != k[1] else draw(st.sampled_from([k, k[0]])), stride=stride,
              padding=p if p[0] != p[1] else draw(st.sampled_from([p, p[0]])),
              ceil_mode=draw(st.booleans()))
    if op == "max_pool2d":
        s_ = stride if stride is not None else k
        s_ = (s_, s_) if isinstance(s_, int) else s_
        assume(all(every_window_touches_input(cfg[dim], k[i], s_[i], p[i], d[i], kw["ceil_mode"])
                   for i, dim in enumerate(("h", "w"))))
        kw.update(dilation=d if d[0] != d[1] else draw(st.sampled_from([d, d[0]])),
                  return_indices=draw(st.booleans()))
    else:
        kw.update(count_include_pad=draw(st.booleans()),
                  divisor_override=draw(st.one_of(st.none(), st.integers(1, 7))))
    cfg["kwargs"] = kw
    return cfg


def pool_input(cfg):
    shape = ([] if cfg["batch"] is None else [cfg["batch"]]) + [cfg["c"], cfg["h"], cfg["w"]]
    return make_layout(distinct_values(shape, cfg["dtype"]), cfg["layout"]).requires_grad_(True)


def check_valid(cfg):
    x = pool_input(cfg)
    ref = getattr(F, cfg["op"])(x, **cfg["kwargs"])
    out = getattr(cnnext.functional, cfg["op"])(x, **cfg["kwargs"])
    with_indices = isinstance(ref, tuple)
    assert isinstance(out, tuple) == with_indices
    if with_indices:
        (ref, ref_idx), (out, out_idx) = ref, out
        assert out_idx.dtype == torch.int64
        torch.testing.assert_close(out_idx, ref_idx, rtol=0, atol=0)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert_close(out, ref)
    if ref.numel() == 0:
        return
    grad = torch.randn(ref.shape, dtype=torch.float64).to(cfg["dtype"])
    (expected,) = torch.autograd.grad(ref, x, grad)
    (actual,) = torch.autograd.grad(out, x, grad)
    assert_close(actual, expected)


@pytest.mark.parametrize("op", OPS)
@fuzz(150)
@given(data=st.data())
def test_pool_random_valid_configs_match_torch(op, data):
    check_valid(data.draw(valid_pool(op)))


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
@fuzz(60)
@given(data=st.data())
def test_pool_half_dtypes_forward_match_torch(op, data):
    cfg = data.draw(valid_pool(op))
    cfg["dtype"] = data.draw(st.sampled_from([torch.float16, torch.bfloat16]))
    if op == "max_pool2d":  # ties after rounding make indices ambiguous: values only
        cfg["kwargs"]["return_indices"] = False
    x = pool_input(cfg).detach()
    assert_close(getattr(cnnext.functional, op)(x, **cfg["kwargs"]),
                 getattr(F, op)(x, **cfg["kwargs"]))


# ---- arbitrary configurations: same errors as torch, never a crash ---------------------------
def arg(lo, hi):
    return st.one_of(st.integers(lo, hi), st.lists(st.integers(lo, hi), min_size=1, max_size=3))


@st.composite
def any_pool(draw, op):
    dim = draw(st.sampled_from([4, 4, 3, 2, 5]))
    shape = [draw(st.integers(0, 6)) for _ in range(dim)]
    if op.startswith("adaptive"):
        kw = dict(output_size=draw(st.one_of(
            st.integers(-1, 7), st.lists(st.one_of(st.none(), st.integers(-1, 7)), min_size=1,
                                          max_size=3))))
        if op == "adaptive_max_pool2d":
            kw["return_indices"] = draw(st.booleans())
    else:
        kw = dict(kernel_size=draw(arg(-1, 5)), stride=draw(st.one_of(st.none(), arg(-1, 4))),
                  padding=draw(arg(-1, 3)), ceil_mode=draw(st.booleans()))
        if op == "max_pool2d":
            kw.update(dilation=draw(arg(-1, 3)), return_indices=draw(st.booleans()))
        else:
            kw.update(count_include_pad=draw(st.booleans()),
                      divisor_override=draw(st.one_of(st.none(), st.integers(-1, 3))))
    return dict(shape=shape, dtype=draw(st.sampled_from(FLOAT_DTYPES)), kwargs=kw)


@pytest.mark.parametrize("op", OPS)
@fuzz(150)
@given(data=st.data())
def test_pool_random_configs_raise_like_torch(op, data):
    cfg = data.draw(any_pool(op))
    x = torch.randn(cfg["shape"], dtype=cfg["dtype"])
    ref, out = torch_vs_cnnext(lambda: getattr(F, op)(x, **cfg["kwargs"]),
                               lambda: getattr(cnnext.functional, op)(x, **cfg["kwargs"]),
                               lenient=x.numel() == 0 or (op == "adaptive_avg_pool2d"
                                                           and x.dim() not in (3, 4)))
    if ref is None:
        return
    if isinstance(ref, tuple):
        torch.testing.assert_close(out[1], ref[1], rtol=0, atol=0)
        ref, out = ref[0], out[0]
    assert out.shape == ref.shape
    # randn can tie only by chance; values (not indices) are compared exactly either way.
    assert_close(out, ref)

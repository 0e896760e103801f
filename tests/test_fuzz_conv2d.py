"""Property-based tests of cnnext.functional.conv2d against torch.nn.functional.conv2d.

Valid configurations: forward and backward match torch within the dtype's tolerance, for every
padding form, stride, dilation, groups, bias, dtype and memory layout hypothesis draws.
Arbitrary (often invalid) configurations: cnnext raises exactly when torch raises, with the same
exception class and a "cnnext." message, and never crashes; when torch succeeds so does cnnext,
with the same result. Budgets: tests/fuzz_settings.py (CI) or CNNEXT_FUZZ_EXAMPLES (make fuzz).
"""
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st

import cnnext
from conftest import TOLERANCES, assert_close
from fuzz_settings import fuzz

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
LAYOUTS = ["contiguous", "channels_last", "strided", "transposed"]


def make_layout(t, layout):
    """The same values as t, in the requested memory layout (a view where the layout is one)."""
    if layout == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # every other element of a twice-as-wide buffer
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    if layout == "transposed":  # H and W swapped in memory
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    return t


def small_pair(lo, hi):
    return st.one_of(st.integers(lo, hi), st.tuples(st.integers(lo, hi), st.integers(lo, hi)))


@st.composite
def valid_conv(draw):
    groups = draw(st.integers(1, 3))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding_kind = draw(st.sampled_from(["int", "pair", "same", "valid"]))
    stride = (1, 1) if padding_kind == "same" else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if padding_kind == "same":
        padding, pads = "same", (0, 0)
    elif padding_kind == "valid":
        padding, pads = "valid", (0, 0)
    elif padding_kind == "int":
        p = draw(st.integers(0, 3))
        padding, pads = p, (p, p)
    else:
        pads = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
        padding = pads
    # Input large enough that the padded input holds the dilated kernel.
    eff = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    h = max(1, eff[0] - 2 * pads[0] + draw(st.integers(0, 7)))
    w = max(1, eff[1] - 2 * pads[1] + draw(st.integers(0, 7)))
    batch = draw(st.sampled_from([None, 0, 1, 2, 3]))  # None: unbatched (3-D) input
    return dict(
        batch=batch, cin=cin, cout=cout, h=h, w=w, kh=kh, kw=kw, groups=groups,
        stride=draw(st.sampled_from([stride, stride[0]])) if stride[0] == stride[1] else stride,
        padding=padding, dilation=dilation if dilation[0] != dilation[1] else
        draw(st.sampled_from([dilation, dilation[0], [dilation[0]]])),
        bias=draw(st.booleans()), dtype=draw(st.sampled_from(DTYPES)),
        layout=draw(st.sampled_from(LAYOUTS)), weight_layout=draw(st.sampled_from(LAYOUTS)),
    )


def build(cfg, requires_grad=True):
    shape = ([] if cfg["batch"] is None else [cfg["batch"]]) + [cfg["cin"], cfg["h"], cfg["w"]]
    dtype = cfg["dtype"]
    x = torch.randn(shape, dtype=torch.float64).to(dtype)
    w = torch.randn(cfg["cout"], cfg["cin"] // cfg["groups"], cfg["kh"], cfg["kw"],
                    dtype=torch.float64).to(dtype)
    b = torch.randn(cfg["cout"], dtype=torch.float64).to(dtype) if cfg["bias"] else None
    x = make_layout(x, cfg["layout"])
    w = make_layout(w, cfg["weight_layout"])
    leaves = [t for t in (x, w, b) if t is not None]
    for t in leaves:
        t.requires_grad_(requires_grad)
    return x, w, b, leaves


def conv_tolerance(cfg):
    # Half inputs: torch and cnnext round at different points (cnnext computes in float32 on
    # the CPU); the error grows with the reduction length.
    tol = dict(TOLERANCES[cfg["dtype"]])
    if cfg["dtype"] in (torch.float16, torch.bfloat16):
        scale = max(1.0, (cfg["cin"] // cfg["groups"] * cfg["kh"] * cfg["kw"]) ** 0.5 / 2)
        tol = {k: v * scale for k, v in tol.items()}
    return tol


@fuzz(300)
@given(valid_conv())
def test_conv2d_random_valid_configs_match_torch(cfg):
    x, w, b, leaves = build(cfg)
    kwargs = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
                  groups=cfg["groups"])
    try:
        ref = F.conv2d(x, w, b, **kwargs)
    except RuntimeError as e:  # torch lacks a kernel for this dtype/layout: nothing to compare
        assume("not implemented" not in str(e))
        raise
    out = cnnext.functional.conv2d(x, w, b, **kwargs)
    tol = conv_tolerance(cfg)
    assert out.dtype == ref.dtype and out.shape == ref.shape
    assert_close(out, ref, **tol)
    if ref.numel() == 0:
        return
    grad = torch.randn(ref.shape, dtype=torch.float64).to(cfg["dtype"])
    expected = torch.autograd.grad(ref, leaves, grad)
    actual = torch.autograd.grad(out, leaves, grad)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        # Gradients sum over the batch and output plane as well: a longer reduction.
        assert_close(a, e, **{k: v * 4 for k, v in tol.items()})


# ---- arbitrary configurations: same errors as torch, never a crash ---------------------------
def arg_value(lo, hi):
    """An int, or a list of 1 to 3 ints (torch accepts 1 or 2), possibly out of range."""
    return st.one_of(st.integers(lo, hi), st.lists(st.integers(lo, hi), min_size=1, max_size=3))


@st.composite
def any_conv(draw):
    input_dim = draw(st.sampled_from([3, 4, 4, 4, 2, 5]))
    weight_dim = draw(st.sampled_from([4, 4, 4, 3]))
    dims = lambda n: [draw(st.integers(0, 6)) for _ in range(n)]  # noqa: E731
    input_shape, weight_shape = dims(input_dim), dims(weight_dim)
    if draw(st.booleans()):  # often consistent channels, so deeper checks are reached
        if input_dim >= 3 and weight_dim >= 2:
            groups_hint = draw(st.integers(1, 3))
            weight_shape[1] = max(1, weight_shape[1])
            input_shape[-3] = weight_shape[1] * groups_hint
            weight_shape[0] = groups_hint * draw(st.integers(1, 2))
    bias = draw(st.sampled_from(["none", "ok", "wrong_size", "wrong_dtype", "2d"]))
    padding = draw(st.one_of(arg_value(-2, 3), st.sampled_from(["same", "valid", "full"])))
    return dict(
        input_shape=input_shape, weight_shape=weight_shape, bias=bias,
        stride=draw(arg_value(-1, 3)), padding=padding, dilation=draw(arg_value(-1, 3)),
        groups=draw(st.integers(-1, 4)),
        dtype=draw(st.sampled_from([torch.float32, torch.float64])),
        weight_dtype=draw(st.sampled_from([None, None, None, torch.float64, torch.int64])),
    )


def torch_vs_cnnext(fn_torch, fn_cnnext, lenient=False):
    """Runs both; returns (torch result, cnnext result), or (None, None) when both raised alike.

    lenient: cases where torch skips its own checks (an empty input: conv2d accepts dilation=0
    for batch 0, or fails inside with IndexError; adaptive_avg_pool2d to 1x1 takes a mean
    without checking the rank): there cnnext may instead raise its own "cnnext." RuntimeError.
    It still must not crash, and must raise where torch raises."""
    try:
        expected = fn_torch()
    except Exception as e:  # noqa: BLE001  torch's verdict, whatever the class
        expected_error = e
    else:
        expected_error = None
    try:
        actual = fn_cnnext()
    except Exception as e:  # noqa: BLE001
        assert "cnnext" in str(e), f"message lacks the cnnext prefix: {type(e).__name__}({e})"
        if lenient and isinstance(e, RuntimeError):
            return None, None
        assert expected_error is not None, (
            f"torch succeeded but cnnext raised {type(e).__name__}({e})")
        assert isinstance(e, type(expected_error)), (
            f"torch raised {type(expected_error).__name__}({expected_error}) but cnnext raised "
            f"{type(e).__name__}({e})")
        return None, None
    if expected_error is not None:
        raise AssertionError(f"torch raised {type(expected_error).__name__}({expected_error}) "
                             f"but cnnext succeeded")
    return expected, actual


@fuzz(400)
@given(any_conv())
def test_conv2d_random_configs_raise_like_torch(cfg):
    x = torch.randn(cfg["input_shape"], dtype=cfg["dtype"])
    w = torch.randn(cfg["weight_shape"], dtype=torch.float64).to(cfg["weight_dtype"] or cfg["dtype"])
    out_channels = cfg["weight_shape"][0] if cfg["weight_shape"] else 1
    b = {
        "none": None,
        "ok": torch.randn(out_channels, dtype=cfg["dtype"]),
        "wrong_size": torch.randn(out_channels + 1, dtype=cfg["dtype"]),
        "wrong_dtype": torch.randn(out_channels, dtype=torch.float16),
        "2d": torch.randn(1, out_channels, dtype=cfg["dtype"]),
    }[cfg["bias"]]
    kwargs = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
                  groups=cfg["groups"])
    ref, out = torch_vs_cnnext(lambda: F.conv2d(x, w, b, **kwargs),
                               lambda: cnnext.functional.conv2d(x, w, b, **kwargs),
                               lenient=x.numel() == 0)
    # Zero input channels: torch returns 0 output channels whatever the weight (a torch quirk);
    # cnnext returns the defined result, C_out channels of bias (or zeros).
    zero_channels = x.dim() >= 3 and x.shape[-3] == 0
    if ref is not None and not zero_channels:
        assert out.shape == ref.shape
        assert_close(out, ref)

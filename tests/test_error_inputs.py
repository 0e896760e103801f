"""Bad calls raise what torch raises, in torch's order: every error_inputs sample of torch's
own OpInfo database (same class, message matching torch's regex), the module forms, and a
sweep of bad arguments where torch's whole message must appear in ours (after the
"cnnext." prefix)."""
import itertools
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.testing._internal.common_methods_invocations import op_db

import cnnext
import cnnext.functional as CF

OPINFO_OPS = {
    "nn.functional.conv2d": CF.conv2d,
    "nn.functional.max_pool2d": CF.max_pool2d,
    "nn.functional.avg_pool2d": CF.avg_pool2d,
    "nn.functional.adaptive_avg_pool2d": CF.adaptive_avg_pool2d,
    "nn.functional.adaptive_max_pool2d": CF.adaptive_max_pool2d,
}


def _error_inputs():
    for op in op_db:
        if op.name in OPINFO_OPS and op.error_inputs_func is not None:
            for i, error in enumerate(op.error_inputs("cpu")):
                yield pytest.param(op.name, error, id=f"{op.name}-{i}")


@pytest.mark.parametrize("name, error", list(_error_inputs()))
def test_opinfo_error_inputs(name, error):
    sample = error.sample_input
    with pytest.raises(error.error_type) as raised:
        OPINFO_OPS[name](sample.input, *sample.args, **sample.kwargs)
    assert re.search(error.error_regex, str(raised.value)), (error.error_regex, str(raised.value))


def _outcome(fn, *args, **kwargs):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001  (comparing whatever torch raises)
        return e
    return None


def _assert_same_error(theirs, ours, op):
    assert type(ours) is type(theirs), f"torch raised {theirs!r}, cnnext {ours!r}"
    torch_message = str(theirs).split("\n")[0]
    message = re.sub(r"^cnnext\.", "", str(ours))
    if not torch_message.startswith(op):
        message = re.sub(rf"^{op}(\(\))?: ", "", message)
    # Ours may add the values at the end; torch's whole message comes first.
    assert message.startswith(torch_message), f"torch: {torch_message!r}\ncnnext: {str(ours)!r}"


# Shapes and arguments whose errors torch raises before any backend runs (backend messages,
# such as dtype mismatches, differ between torch's own kernels and are tested by class).
X = {"4d": (2, 4, 6, 6), "3d": (4, 6, 6), "2d": (6, 6), "5d": (1, 2, 4, 6, 6),
     "batch0": (0, 4, 6, 6), "h0": (2, 4, 0, 6)}
W = {"4d": (4, 4, 3, 3), "3d": (4, 4, 3), "5d": (4, 4, 3, 3, 1), "2d": (4, 4), "groups2": (4, 2, 3, 3)}
BIAS = {"none": None, "ok": (4,), "short": (3,), "2d": (1, 4), "double": "double"}
CONV_ARGS = [dict(stride=0), dict(stride=-1), dict(padding=-1), dict(dilation=-1), dict(groups=0),
             dict(groups=3), dict(groups=2), dict(padding="same", stride=2), dict(padding="foo"),
             dict(stride=(1, 1, 1)), dict(dilation=(1, 1, 1)), dict(stride=()), dict(padding=10),
             dict(dilation=5), dict(stride=0, padding=-1), dict(padding="valid"), dict(padding="same")]


@pytest.mark.parametrize("x_name", list(X))
def test_conv2d_errors_in_torch_order(x_name):
    x = torch.randn(X[x_name])
    for (w_name, w_shape), (b_name, b_shape), kwargs in itertools.product(W.items(), BIAS.items(), CONV_ARGS):
        w = torch.randn(w_shape)
        b = torch.randn(4, dtype=torch.float64) if b_shape == "double" else (
            None if b_shape is None else torch.randn(b_shape))
        if b_shape == "double" and isinstance(kwargs.get("padding"), str):
            continue  # torch's padding-string path leaves the bias dtype to its backends
        theirs = _outcome(F.conv2d, x, w, b, **kwargs)
        ours = _outcome(CF.conv2d, x, w, b, **kwargs)
        if theirs is None:
            assert ours is None, f"{w_name} {b_name} {kwargs}: torch accepts, cnnext raised {ours!r}"
            continue
        assert ours is not None, f"{w_name} {b_name} {kwargs}: cnnext accepted, torch raised {theirs!r}"
        _assert_same_error(theirs, ours, "conv2d")


POOL_X = {"4d": (2, 3, 7, 7), "3d": (3, 7, 7), "2d": (7, 7), "5d": (1, 2, 3, 7, 7), "batch0": (0, 3, 7, 7),
          "c0": (2, 0, 7, 7), "h0": (2, 3, 0, 7), "3d-c0": (0, 7, 7), "3d-w0": (3, 7, 0), "tiny": (1, 1, 2, 2)}
POOL_ARGS = list(itertools.product([2, 0, -1, (3, 2), (2, 2, 2)], [None, 0, -1, (1, 1, 1)], [0, -1, 1, 4, (1, 1, 1)]))


@pytest.mark.parametrize("x_name", list(POOL_X))
def test_pooling_errors_in_torch_order(x_name):
    x = torch.randn(POOL_X[x_name])
    for kernel, stride, padding in POOL_ARGS:
        for dilation, ceil_mode in ((1, False), (0, True), (2, False)):
            kwargs = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode)
            cases = [("max_pool2d", F.max_pool2d, CF.max_pool2d, dict(kwargs, dilation=dilation))]
            if dilation == 1:
                cases += [("avg_pool2d", F.avg_pool2d, CF.avg_pool2d, kwargs),
                          ("avg_pool2d", F.avg_pool2d, CF.avg_pool2d, dict(kwargs, divisor_override=0))]
            for op, theirs_fn, ours_fn, kw in cases:
                theirs, ours = _outcome(theirs_fn, x, **kw), _outcome(ours_fn, x, **kw)
                if theirs is None:
                    assert ours is None, f"{op} {kw}: torch accepts, cnnext raised {ours!r}"
                    continue
                assert ours is not None, f"{op} {kw}: cnnext accepted, torch raised {theirs!r}"
                _assert_same_error(theirs, ours, op)


MODULE_CASES = [
    (lambda m: m.Conv2d(4, 6, 3), (2, 3, 8, 8)),
    (lambda m: m.Conv2d(4, 6, 3), (8, 8)),
    (lambda m: m.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"), (1, 4, 1, 1)),
    (lambda m: m.Conv2d(4, 6, 5, dilation=2), (1, 4, 6, 6)),
    (lambda m: m.Conv2d(4, 6, 3, padding="same"), (5, 4, 8)),
    (lambda m: m.MaxPool2d(2, padding=2), (1, 1, 6, 6)),
    (lambda m: m.MaxPool2d(3), (1, 1, 2, 2)),
    (lambda m: m.MaxPool2d(2, padding=-1), (0, 1, 49)),
    (lambda m: m.AvgPool2d(2, padding=4), (0, 1, 49)),
    (lambda m: m.AvgPool2d(2, divisor_override=0), (1, 3, 3)),
    (lambda m: m.AdaptiveAvgPool2d((-1, 2)), (1, 2, 4, 4)),
    (lambda m: m.AdaptiveMaxPool2d(2), (2, 0, 4, 4)),
]


ADAPTIVE_X = {"4d": (2, 3, 7, 7), "3d": (3, 7, 7), "2d": (7, 7), "5d": (1, 2, 3, 7, 7), "1d": (7,),
              "h0": (2, 3, 0, 7), "c0": (2, 0, 7, 7), "3d-h0": (3, 0, 7)}
ADAPTIVE_SIZES = [1, (1, 1), (2, None), (2, 2, 2), (), (-1, 0), (3,), (-2, -2)]


@pytest.mark.parametrize("op", ["adaptive_avg_pool2d", "adaptive_max_pool2d"])
def test_adaptive_pooling_errors_in_torch_order(op):
    for (x_name, shape), size in itertools.product(ADAPTIVE_X.items(), ADAPTIVE_SIZES):
        x = torch.randn(shape)
        theirs, ours = _outcome(getattr(F, op), x, size), _outcome(getattr(CF, op), x, size)
        if theirs is None:
            assert ours is None, f"{op} {x_name} {size}: torch accepts, cnnext raised {ours!r}"
            torch.testing.assert_close(getattr(CF, op)(x, size), getattr(F, op)(x, size), equal_nan=True)
            continue
        assert ours is not None, f"{op} {x_name} {size}: cnnext accepted, torch raised {theirs!r}"
        _assert_same_error(theirs, ours, op)


@pytest.mark.parametrize("i", range(len(MODULE_CASES)))
def test_modules_raise_like_torch(i):
    make, shape = MODULE_CASES[i]
    x = torch.randn(shape)
    theirs, ours = _outcome(make(torch.nn), x), _outcome(make(cnnext), x)
    assert theirs is not None and ours is not None, (theirs, ours)
    assert type(ours) is type(theirs), (theirs, ours)
    if not str(theirs).startswith("Padding size should be"):  # torch's F.pad, before the conv
        assert str(theirs).split("\n")[0].split(",")[0].split(" (")[0] in str(ours), (theirs, ours)

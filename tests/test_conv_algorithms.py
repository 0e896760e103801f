"""The CPU conv algorithm table (csrc/cpu/conv_algorithms.h) and its choice (conv_select.h):
every row forced on problems it applies to agrees with torch for every pass; the rule's choice
is always an applicable row; benchmark mode (cnnext.backends.cpu.benchmark) measures, caches,
and stays correct under concurrent threads."""
import json
import os
import threading

import pytest
import torch
import torch.nn.functional as F

import cnnext

PASSES = ("forward", "grad_input", "grad_weight")
ROWS = ("direct", "matmul", "pointwise", "winograd", "implicit", "im2col")
NHWC_ROWS = ("direct_nhwc", "matmul", "pointwise_nhwc", "im2col_nhwc")
# CNNEXT_CONV_ALGO values: on a channels_last call "direct", "pointwise" and "im2col" force the
# NHWC row of that kind; the others (no NHWC form) run their NCHW row on copies.
KNOBS = (None, "direct", "matmul", "pointwise", "winograd", "implicit", "im2col")
CENSUS = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "census_layers.json")

# (N, C_in, H, W, C_out, (kh, kw), stride, padding, dilation, groups): one of each kind the
# table distinguishes, with odd sizes so every edge path runs.
SHAPES = [
    (2, 3, 11, 13, 8, (3, 3), 2, 1, 1, 1),       # RGB first layer, strided
    (2, 8, 9, 7, 12, (3, 3), 1, 1, 1, 1),        # 3x3 stride 1 (Winograd applies)
    (1, 16, 10, 10, 16, (3, 3), 1, 2, 2, 1),     # dilated 3x3
    (2, 6, 7, 9, 10, (1, 1), 1, 0, 1, 1),        # pointwise
    (2, 6, 7, 9, 10, (1, 1), 2, 0, 1, 2),        # strided, grouped 1x1
    (2, 8, 9, 9, 8, (5, 5), 1, 2, 1, 8),         # depthwise 5x5
    (2, 4, 11, 11, 8, (7, 7), 2, 3, 1, 4),       # depthwise, multiplier 2, stride 2
    (2, 8, 8, 9, 8, (1, 7), 1, (0, 3), 1, 1),    # 1x7
    (2, 8, 9, 8, 8, (7, 1), 1, (3, 0), 1, 1),    # 7x1
    (2, 12, 9, 9, 12, (3, 3), 2, 1, 1, 3),       # grouped, strided
    (3, 24, 1, 1, 10, (1, 1), 1, 0, 1, 1),       # squeeze-excite: 1x1 on a 1x1 map
    (3, 24, 1, 1, 12, (1, 1), 1, 0, 1, 4),       # the same, grouped
]


def _env(monkeypatch, algo=None):
    monkeypatch.delenv("CNNEXT_CONV_ALGO", raising=False)
    if algo is not None:
        monkeypatch.setenv("CNNEXT_CONV_ALGO", algo)


def _problem(shape):
    n, c, h, w, co, k, s, p, d, g = shape
    return (n, c, h, w), (co, c // g, *k), s, p, d, g


def _passes(shape, dtype, seed=0, channels_last=False):
    """Forward output, grad_input and grad_weight through cnnext's operators, and torch's."""
    (n, c, h, w), wsize, s, p, d, g = _problem(shape)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    wt = torch.randn(*wsize, generator=gen, dtype=dtype)
    b = torch.randn(wsize[0], generator=gen, dtype=dtype)
    pair = lambda v: list(v) if isinstance(v, tuple) else [v, v]  # noqa: E731
    args = (pair(s), pair(p), pair(d), g)
    y = torch.ops.cnnext.conv2d(x, wt, b, *args)
    go = torch.randn(y.shape, generator=gen, dtype=dtype)
    if channels_last:
        go = go.contiguous(memory_format=torch.channels_last)
    gi, _, _ = torch.ops.cnnext.conv2d_backward(go, x, wt, *args, [True, False, False])
    _, gw, _ = torch.ops.cnnext.conv2d_backward(go, x, wt, *args, [False, True, False])
    xr, wr = x.clone().requires_grad_(), wt.clone().requires_grad_()
    yr = F.conv2d(xr, wr, b, s, p, d, g)
    gir, gwr = torch.autograd.grad(yr, (xr, wr), go)
    return {"forward": (y, yr.detach()), "grad_input": (gi, gir), "grad_weight": (gw, gwr)}


def _close(actual, expected, dtype, algo):
    scale = expected.abs().max().item() or 1.0
    tol = {torch.float64: 1e-12, torch.float32: 5e-5 if algo == "winograd" else 2e-6}[dtype]
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= tol * scale


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:5])) + f"k{s[5]}s{s[6]}g{s[9]}")
def test_every_row_forced_matches_torch(monkeypatch, shape, dtype):
    _env(monkeypatch)
    problem = _problem(shape)
    applicable = {ps: cnnext.backends.cpu.algorithms(*problem, dtype=dtype, pass_=ps) for ps in PASSES}
    assert all("im2col" in rows for rows in applicable.values())  # the general fallback
    for algo in ROWS:
        if not any(algo in rows for rows in applicable.values()):
            continue
        _env(monkeypatch, algo)
        for ps, (actual, expected) in _passes(shape, dtype).items():
            if algo in applicable[ps]:
                _close(actual, expected, dtype, algo)


@pytest.mark.parametrize("isa", ["avx512", "avx2", "portable"])
def test_every_row_on_every_isa(monkeypatch, isa):
    monkeypatch.setenv("CNNEXT_ISA", isa)
    for shape in (SHAPES[1], SHAPES[3], SHAPES[6], SHAPES[7], SHAPES[10]):
        problem = _problem(shape)
        for algo in ROWS:
            rows = {ps: cnnext.backends.cpu.algorithms(*problem, dtype=torch.float32, pass_=ps)
                    for ps in PASSES}
            if not any(algo in r for r in rows.values()):
                continue
            _env(monkeypatch, algo)
            for ps, (actual, expected) in _passes(shape, torch.float32).items():
                if algo in rows[ps]:
                    _close(actual, expected, torch.float32, algo)


def _census_problems():
    with open(CENSUS) as f:
        layers = json.load(f)
    return [dict(input=[l["n"], l["c_in"], l["h"], l["w"]],
                 weight=[l["c_out"], l["c_in"] // l["groups"], *l["kernel"]],
                 stride=l["stride"], padding=l["padding"], dilation=l["dilation"],
                 groups=l["groups"], name=l["name"]) for l in layers if l["kind"] == "conv"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rule_picks_an_applicable_row_for_every_census_shape(monkeypatch, dtype):
    _env(monkeypatch)
    layers = _census_problems()
    assert len(layers) > 50
    for layer in layers:
        n, c, h, w = layer["input"]
        args = ([n, c, h, w], layer["weight"], layer["stride"], layer["padding"], layer["dilation"],
                layer["groups"])
        for ps in PASSES:
            rows = cnnext.backends.cpu.algorithms(*args, dtype=dtype, pass_=ps)
            choice = cnnext.backends.cpu.choice(*args, dtype=dtype, pass_=ps)
            assert choice in rows, (layer["name"], ps, choice, rows)
            if dtype == torch.float64:
                assert choice != "winograd"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:5])) + f"k{s[5]}s{s[6]}g{s[9]}")
def test_channels_last_calls_match_torch_and_stay_channels_last(monkeypatch, shape, dtype):
    """Whichever layout runs (NHWC rows on the tensors as they lie, or NCHW rows on copies,
    by the rule or forced), a channels_last input gives channels_last output and grad_input
    with torch's values."""
    for knob in KNOBS:
        _env(monkeypatch, knob)
        for ps, (actual, expected) in _passes(shape, dtype, channels_last=True).items():
            # The rule may pick Winograd: its tolerance.
            _close(actual, expected, dtype, knob or "winograd")
            if ps != "grad_weight":
                assert actual.is_contiguous(memory_format=torch.channels_last), (knob, ps)


def test_nhwc_problem_lists_only_rows_with_an_nhwc_form():
    for shape in SHAPES:
        for ps in PASSES:
            rows = cnnext.backends.cpu.algorithms(*_problem(shape), pass_=ps, channels_last=True)
            assert rows and set(rows) <= set(NHWC_ROWS), (shape, ps, rows)
            assert "im2col_nhwc" in rows  # the NHWC fallback: every geometry
            choice = cnnext.backends.cpu.choice(*_problem(shape), pass_=ps, channels_last=True)
            assert choice in rows


def test_override_applies_only_where_the_row_applies(monkeypatch):
    # Winograd does not apply to a 5x5 layer: the rule's choice runs instead.
    _env(monkeypatch, "winograd")
    problem = _problem(SHAPES[5])
    assert "winograd" not in cnnext.backends.cpu.algorithms(*problem)
    assert cnnext.backends.cpu.choice(*problem) != "winograd"
    _env(monkeypatch, "im2col")
    assert cnnext.backends.cpu.choice(*problem) == "im2col"


def test_cost_features_are_reported_for_each_row():
    problem = _problem(SHAPES[1])
    args = [list(problem[0]), list(problem[1]), [1, 1], [1, 1], [1, 1], 1]
    for algo in ROWS + NHWC_ROWS:
        calls, tasks, macs, nbytes, seconds = torch.ops.cnnext._conv2d_cost_features(
            *args, torch.float32, "forward", algo, algo.endswith("_nhwc"))
        assert calls == 1 and tasks >= 1 and macs > 0 and nbytes > 0 and seconds > 0
    with pytest.raises(RuntimeError, match="no conv algorithm named 'fft'"):
        torch.ops.cnnext._conv2d_cost_features(*args, torch.float32, "forward", "fft")
    with pytest.raises(RuntimeError, match="pass must be forward, grad_input or grad_weight"):
        cnnext.backends.cpu.choice(*problem, pass_="backward")


@pytest.fixture
def benchmark_mode(monkeypatch):
    _env(monkeypatch)
    cnnext.backends.cpu.benchmark_cache_clear()
    with cnnext.backends.cpu.flags(benchmark=True):
        yield
    cnnext.backends.cpu.benchmark_cache_clear()
    assert not cnnext.backends.cpu.benchmark


def test_benchmark_mode_measures_caches_and_matches_torch(benchmark_mode):
    assert cnnext.backends.cpu.benchmark
    for shape in SHAPES:
        for ps, (actual, expected) in _passes(shape, torch.float32).items():
            _close(actual, expected, torch.float32, "winograd")
    # One key per (shape, pass): forward, grad_input, grad_weight.
    assert cnnext.backends.cpu.benchmark_cache_size() == 3 * len(SHAPES)
    # Later calls reuse the choices: no new keys, same bits.
    first = _passes(SHAPES[1], torch.float32)
    again = _passes(SHAPES[1], torch.float32)
    assert cnnext.backends.cpu.benchmark_cache_size() == 3 * len(SHAPES)
    for ps in PASSES:
        assert torch.equal(first[ps][0], again[ps][0])
    cnnext.backends.cpu.benchmark_cache_clear()
    assert cnnext.backends.cpu.benchmark_cache_size() == 0


def test_benchmark_mode_under_concurrent_threads(benchmark_mode):
    errors = []

    def work(seed):
        try:
            for shape in SHAPES[:6]:
                for ps, (actual, expected) in _passes(shape, torch.float32, seed).items():
                    _close(actual, expected, torch.float32, "winograd")
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert cnnext.backends.cpu.benchmark_cache_size() == 3 * 6


def test_flag_off_is_deterministic(monkeypatch):
    _env(monkeypatch)
    assert not cnnext.backends.cpu.benchmark
    for shape in SHAPES[:4]:
        a, b = _passes(shape, torch.float32), _passes(shape, torch.float32)
        for ps in PASSES:
            assert torch.equal(a[ps][0], b[ps][0])

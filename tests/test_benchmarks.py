"""The benchmark suite's machinery on a tiny configuration: the correctness gate, the row
runner, the report (table, JSON, PNG), the memory probe, and the digits example. No timing
assertions: only that the machinery computes, rejects and writes what it promises."""
import json
import math
import os
import sys
import time
from functools import partial

import pytest
import torch

import cnnext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import census, census_rows, layers, memory, models  # noqa: E402
from benchmarks.configs import CONFIGS, DEFAULT_CONFIGS  # noqa: E402
from benchmarks.run import Config, run_suite  # noqa: E402
from benchmarks.suite import Case, Row, compare, run_row  # noqa: E402

TINY_TIMING = dict(warmup=1, min_reps=2, max_reps=3, budget_s=0.0)
TINY_CONV = layers.ConvSpec("tiny_conv", 2, 3, 9, 4, 3, padding=1)
TINY_POOL_MAX = layers.PoolSpec("tiny_max", "max", 2, 3, 9, 3, 2, ceil_mode=True)
TINY_POOL_AVG = layers.PoolSpec("tiny_avg", "avg", 2, 3, 8, 2, 2)
TINY_MODEL = models.ModelSpec("tiny_lenet", models.lenet, 4, (1, 28, 28))
HAS_POOL = hasattr(cnnext.functional, "max_pool2d") and hasattr(cnnext.functional, "avg_pool2d")


def conv_row(backward, spec=TINY_CONV):
    return Row(section="conv", name=spec.name, pass_="fwd+bwd" if backward else "fwd",
               shape=spec.shape, flops=spec.flops * (3 if backward else 1),
               make=partial(layers.conv_case, spec, backward), spec=spec)


def pool_row(spec, backward):
    return Row(section="pool", name=spec.name, pass_="fwd+bwd" if backward else "fwd",
               shape=spec.shape, bytes=spec.min_bytes(4, backward),
               make=partial(layers.pool_case, spec, backward), spec=spec)


def model_rows(config=None):
    return [Row(section="model", name=TINY_MODEL.name, pass_=p, shape=TINY_MODEL.shape(4), config=config,
                dtype_override=CONFIGS[config].dtype if config else None,
                make=partial(models.model_case, TINY_MODEL, 4, p == "train step",
                             config=CONFIGS[config] if config else None),
                flops_fn=partial(models._model_flops, TINY_MODEL, 4, p == "train step"))
            for p in ("inference", "train step")]


def small_census_entries():
    """Three small layers of the committed census: a depthwise conv, a global average pool
    and a max pool, at batch 1."""
    entries = census.load()
    pick = lambda ok: next(e for e in entries if e["n"] == 1 and ok(e))
    return [pick(lambda e: e["kind"] == "conv" and e["groups"] == e["c_in"] > 1 and e["h"] <= 7),
            pick(lambda e: e["kind"] == "adaptive_avg_pool" and e["h"] <= 7),
            pick(lambda e: e["kind"] == "max_pool" and e["h"] <= 14)]


def gemm_row():
    return Row(section="gemm", name="gemm_48", pass_="fwd", shape="48²", flops=2 * 48**3,
               make=lambda device, dtype: layers.gemm_case(48, device, dtype),
               dtype_override=torch.float32)


@pytest.mark.parametrize("backward", [False, True])
def test_gate_rejects_a_wrong_kernel_and_never_times_it(monkeypatch, backward):
    calls = []
    genuine = cnnext.functional.conv2d

    def off_by_a_little(*args, **kwargs):
        calls.append(1)
        out = genuine(*args, **kwargs)
        return out + 1e-2 * out.detach().abs().max()  # wrong forward; its grads stay right

    monkeypatch.setattr(cnnext.functional, "conv2d", off_by_a_little)
    row = run_row(conv_row(backward), "cpu", torch.float32, TINY_TIMING)
    assert row.result["status"] == "FAILED"
    assert row.result["timed"] is False
    assert "torch" not in row.result and "ratio" not in row.result
    assert row.result["max_error"] > row.result["tolerance"]
    assert len(calls) == 1  # the gate's call only


def test_gate_rejects_wrong_gradients(monkeypatch):
    genuine = cnnext.functional.conv2d

    class DoubleGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return 2 * g

    monkeypatch.setattr(cnnext.functional, "conv2d", lambda *a, **k: DoubleGrad.apply(genuine(*a, **k)))
    assert run_row(conv_row(False), "cpu", torch.float32, TINY_TIMING).result["status"] == "ok"
    assert run_row(conv_row(True), "cpu", torch.float32, TINY_TIMING).result["status"] == "FAILED"


def test_gate_reports_an_error_and_nan(monkeypatch):
    def raises(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(cnnext.functional, "conv2d", raises)
    result = run_row(conv_row(False), "cpu", torch.float32, TINY_TIMING).result
    assert result["status"] == "ERROR" and "boom" in result["error"] and not result["timed"]
    nan = torch.tensor([1.0, float("nan")])
    assert math.isnan(compare(torch.tensor([1.0, 2.0]), nan))
    assert compare(torch.zeros(2), torch.zeros(3)) == math.inf


def test_pool_rows_are_unavailable_without_the_ops(monkeypatch):
    monkeypatch.delattr(cnnext.functional, "max_pool2d", raising=False)
    result = run_row(pool_row(TINY_POOL_MAX, True), "cpu", torch.float32, TINY_TIMING).result
    assert result["status"] == "n/a" and not result["timed"]


def test_pool_min_bytes_and_ceil_mode_size():
    spec = layers.PoolSpec("x", "max", 1, 1, 56, 3, 2, ceil_mode=True)
    assert spec.out_hw == 28 == torch.nn.functional.max_pool2d(torch.zeros(1, 1, 56, 56), 3, 2, ceil_mode=True).shape[-1]
    for spec in layers.POOL_LAYERS:
        x = torch.zeros(1, 1, spec.hw, spec.hw)
        pool = torch.nn.functional.max_pool2d if spec.kind == "max" else torch.nn.functional.avg_pool2d
        assert pool(x, spec.k, spec.stride, spec.padding, ceil_mode=spec.ceil_mode).shape[-1] == spec.out_hw
        assert spec.min_bytes(4, True) > 2 * spec.min_bytes(4, False) - 1
    for spec in layers.CONV_LAYERS:
        x = torch.zeros(1, spec.c_in, spec.hw, spec.hw, device="meta")
        w = torch.zeros(spec.c_out, spec.c_in // spec.groups, spec.k, spec.k, device="meta")
        out = torch.nn.functional.conv2d(x, w, None, spec.stride, spec.padding, spec.dilation, spec.groups)
        assert out.shape[-1] == spec.out_hw


def test_pool_rows_are_held_to_the_copy_of_their_own_size():
    from benchmarks.machine import copy_gbps_at

    curve = [{"mib": 8, "gbps": 180.0}, {"mib": 32, "gbps": 80.0}, {"mib": 256, "gbps": 30.0}]
    mib = 2**20
    assert copy_gbps_at(curve, 1 * mib) == 180.0  # below the curve: its first point
    assert copy_gbps_at(curve, 8 * mib) == 180.0
    assert copy_gbps_at(curve, 16 * mib) == pytest.approx(130.0)  # halfway in log size
    assert copy_gbps_at(curve, 32 * mib) == pytest.approx(80.0)
    assert copy_gbps_at(curve, 4096 * mib) == 30.0  # beyond: its last point
    assert copy_gbps_at([], mib) is None


def test_half_configs_pair_into_a_best_layout_summary():
    from benchmarks.summaries import LAYOUT_PAIRS

    for dtype, (nchw, cl) in LAYOUT_PAIRS.items():
        assert CONFIGS[nchw].dtype_name == CONFIGS[cl].dtype_name == dtype
        assert not CONFIGS[nchw].channels_last and CONFIGS[cl].channels_last
    assert CONFIGS["f16-cl"].apply(torch.zeros(1, 3, 2, 2)).dtype == torch.float16


def _finite_numbers(value):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite_numbers(v) for v in value)
    return True


def test_tiny_suite_writes_table_json_and_png(tmp_path):
    rows = [conv_row(False), conv_row(True), gemm_row(), *model_rows(), *model_rows("bf16-cl")]
    rows += [pool_row(s, b) for s in (TINY_POOL_MAX, TINY_POOL_AVG) for b in (False, True)]
    rows += census_rows.census_rows(DEFAULT_CONFIGS, small_census_entries())
    config = Config(out_dir=str(tmp_path), progress=False, timing=dict(TINY_TIMING),
                    gemm_peak_sizes=[64], gemm_peak_reps=1, copy_sizes_mib=[1], copy_reps=1,
                    memory_layers=0)
    rows, summary, text, paths = run_suite(config, rows)

    statuses = {r.label: r.result["status"] for r in rows}
    for label in ("tiny_conv fwd", "tiny_conv fwd+bwd", "gemm_48 fwd", "tiny_lenet inference",
                  "tiny_lenet train step", "tiny_lenet train step [bf16-cl]"):
        assert statuses[label] == "ok", (label, rows)
    pool_status = {s for label, s in statuses.items() if label.startswith("tiny_max") or label.startswith("tiny_avg")}
    assert pool_status == ({"ok"} if HAS_POOL else {"n/a"})
    census_status = {r.result["status"] for r in rows if r.section.startswith("census_")}
    assert census_status == {"ok"}, [(r.label, r.result.get("error")) for r in rows]

    data = json.loads(open(paths["results.json"]).read())
    for key in ("schema_version", "machine", "run", "peaks", "geomeans", "best_layout", "memory", "rows"):
        assert key in data
    for key in ("cpu_model", "logical_cores", "torch_threads", "torch", "cnnext_commit", "date_utc",
                "command", "dtype", "device"):
        assert key in data["machine"]
    assert data["peaks"]["gemm_gflops"] > 0 and data["peaks"]["copy_gbps"] > 0
    assert data["peaks"]["bf16_gflops"] >= data["peaks"]["gemm_gflops"] and data["peaks"]["bf16_peak_source"]
    assert _finite_numbers(data)
    timed = [r for r in data["rows"] if r["status"] == "ok"]
    for r in timed:
        assert r["timed"] and r["ratio"] > 0 and r["row_wall_s"] > 0
        for side in ("torch", "cnnext"):
            s = r[side]
            assert s["median_ms"] > 0 and s["reps"] >= 2 and s["page_faults_per_call"] >= 0
            assert s["fraction_of_peak"] > 0
            if r["config"] == "bf16-cl" and "gflops" in s:  # bfloat16 against the bfloat16 limit
                assert s["fraction_of_peak"] == pytest.approx(s["gflops"] / data["peaks"]["bf16_gflops"])
    assert "conv fwd" in data["geomeans"] and "model train step" in data["geomeans"]
    for key in DEFAULT_CONFIGS:
        for pass_ in ("fwd", "fwd+bwd"):
            g = data["geomeans"][f"census_conv {key} {pass_}"]
            assert g["rows"] == 1 and g["min_ratio"] == pytest.approx(g["geomean_ratio"])
            assert data["geomeans"][f"census_pool {key} {pass_}"]["rows"] == 2

    # Best layout each side: torch's faster of NCHW/channels_last over cnnext's faster.
    assert set(data["best_layout"]) == {"float32"}  # no bfloat16 NCHW row: no bfloat16 pair
    by_label = {(r["section"], r["name"], r["pass"], r["config"]): r for r in data["rows"]}
    best_rows = data["best_layout"]["float32"]["rows"]
    assert len(best_rows) == 3 * 2
    for b in best_rows:
        nchw, cl = (by_label[(b["section"], b["name"], b["pass"], k)] for k in ("f32-nchw", "f32-cl"))
        for side in ("torch", "cnnext"):
            assert b[f"{side}_ms"] == min(nchw[side]["median_ms"], cl[side]["median_ms"])
        assert b["ratio"] == pytest.approx(b["torch_ms"] / b["cnnext_ms"])
    assert data["best_layout"]["float32"]["groups"]["census_pool fwd"]["rows"] == 2

    png = open(paths["results.png"], "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    table = open(paths["table.txt"]).read()
    assert table == text + "\n"
    for needle in ("Census conv layers", "Census pooling", "float32 channels_last", "bfloat16 channels_last",
                   "Best layout each side, float32", "old 16-layer suite", "GEMM", "Models", "geomean",
                   "tiny_conv", "torch/cnnext"):
        assert needle in table
    # The report redraws from the JSON alone (python -m benchmarks.report).
    from benchmarks import report

    redrawn = report.table(report.rows_from_json(data), {k: v for k, v in data.items() if k != "rows"})
    assert redrawn.splitlines()[3:] == text.splitlines()[3:]
    page = open(paths["summary.md"]).read()
    for needle in ("Where cnnext stands", "Best layout each side, float32", "| census_conv | float32 NCHW | fwd |",
                   "tiny_lenet | bfloat16 channels_last | train step"):
        assert needle in page


def test_many_rows_draw_the_distribution_plot(tmp_path):
    from types import SimpleNamespace

    from benchmarks import report

    rows = [SimpleNamespace(section="census_conv", config=c, name=f"r{i}", pass_=p, shape="-",
                            result={"timed": True, "ratio": 0.5 + i / 50, "torch": {}, "cnnext": {}})
            for i in range(report.PER_ROW_PLOT_LIMIT + 1) for c in ("f32-nchw", "f32-cl") for p in ("fwd", "fwd+bwd")]
    summary = {"machine": {"torch": "x", "cpu_model": "cpu", "torch_threads": 2, "device": "cpu",
                           "date_utc": "now"}, "peaks": {"gemm_gflops": 1.0, "copy_gbps": 1.0}}
    report.plot(rows, summary, str(tmp_path / "p.png"))
    png = (tmp_path / "p.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_memory_probe_counts_the_output():
    result = memory.measure("lenet_c2", "cnnext", "cpu", "float32", 1)
    assert result["fwd_output_bytes"] == 64 * 16 * 10 * 10 * 4
    assert result["fwdbwd_result_bytes"] > result["fwd_output_bytes"]
    assert result["fwd_extra_bytes"] >= 0 and result["fwdbwd_extra_bytes"] >= 0


def test_cli_defaults_and_filter():
    from benchmarks.__main__ import parse_args
    from benchmarks.run import select_rows

    args = parse_args([])
    assert args.quick and args.device == "cpu" and args.dtype == "float32" and args.out == "bench-out"
    assert args.config == DEFAULT_CONFIGS
    assert not parse_args(["--full"]).quick
    assert parse_args(["--config", "f32-cl,bf16-nchw"]).config == ("f32-cl", "bf16-nchw")
    with pytest.raises(SystemExit):
        parse_args(["--config", "f64-nchw"])

    entries = census.load()
    full = select_rows(Config(quick=False))
    census_full = [r for r in full if r.section.startswith("census_")]
    assert len(census_full) == len(entries) * len(DEFAULT_CONFIGS) * 2
    assert {(r.name, r.config) for r in census_full} == {(e["name"], c) for e in entries for c in DEFAULT_CONFIGS}
    assert {r.name for r in full if r.section == "conv"} == {s.name for s in layers.CONV_LAYERS}
    assert {r.name for r in full if r.section == "pool"} == {s.name for s in layers.POOL_LAYERS}
    published = {s.name for s in models.MODELS if s.configs}
    assert len(published) >= 5 and published <= set(census.ARCHITECTURES)
    assert {(r.name, r.config, r.pass_) for r in full if r.section == "model" and r.config} == {
        (m, c, p) for m in published for c in DEFAULT_CONFIGS for p in ("inference", "train step")
    } | {(m, c, "inference fused") for m in models.FUSED_MODELS for c in DEFAULT_CONFIGS}
    for r in full:
        if r.config:
            assert r.dtype_override == CONFIGS[r.config].dtype

    quick = select_rows(Config(quick=True))
    assert 0 < len(quick) < len(full)
    assert {r.name for r in quick if r.section.startswith("census_")} == set(census_rows.QUICK)
    assert {r.section for r in quick} == {"census_conv", "census_pool", "model", "gemm"}
    assert {r.config for r in quick if r.section == "model"} == set(DEFAULT_CONFIGS)
    assert {r.name for r in select_rows(Config(quick=False, filter="^resnet_3x3"))} == {
        "resnet_3x3_56", "resnet_3x3_28", "resnet_3x3_14", "resnet_3x3_7", "resnet_3x3_s2"}
    # --filter also matches the architectures a census layer comes from.
    convnext = select_rows(Config(quick=False, filter="convnext_tiny", configs=("f32-cl",)))
    expected = {e["name"] for e in entries if "convnext_tiny" in e["from"]}
    assert {r.name for r in convnext if r.section.startswith("census_")} == expected
    assert {r.config for r in convnext} <= {"f32-cl"}


def test_digits_example_one_short_epoch():
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import train_lenet_digits

    results = train_lenet_digits.main(["--epochs", "1", "--limit", "96", "--no-progress", "--dtype", "float64"])
    for loss, accuracy in results.values():
        assert math.isfinite(loss) and 0.0 <= accuracy <= 1.0
    assert results["torch"] == pytest.approx(results["cnnext"], rel=1e-9)


def test_model_gate_checks_every_gradient_in_float64(monkeypatch):
    genuine = cnnext.functional.conv2d

    class SlightlyWrongGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g * (1 + 1e-6)  # far below float32 noise of a deep net, far above float64's

    monkeypatch.setattr(cnnext.functional, "conv2d", lambda *a, **k: SlightlyWrongGrad.apply(genuine(*a, **k)))
    inference, train = model_rows()
    assert run_row(inference, "cpu", torch.float32, TINY_TIMING).result["status"] == "ok"
    result = run_row(train, "cpu", torch.float32, TINY_TIMING).result
    assert result["status"] == "FAILED" and "float64" in result["error"] and not result["timed"]


def test_slow_calls_get_fewer_repetitions_not_a_longer_row():
    from benchmarks.suite import _affordable

    timing = dict(warmup=1, min_reps=3, max_reps=100, budget_s=0.1, row_cap_s=5.0)
    assert _affordable(timing, 0.5) == {k: v for k, v in timing.items() if k != "row_cap_s"}
    slow = _affordable(timing, 2.0)  # 2 s per pair: 4 calls would pass 5 s
    assert slow["warmup"] == 0 and slow["min_reps"] == 2 and slow["row_cap_s"] == 5.0
    assert _affordable(timing, 4.0)["min_reps"] == 1
    assert _affordable(timing, 60.0) is None  # the gate's calls are the only sample
    assert "row_cap_s" not in _affordable({k: v for k, v in timing.items() if k != "row_cap_s"}, 60.0)


def test_a_row_slower_than_its_cap_is_timed_by_the_gate_calls():
    calls = []

    def slow(side):
        calls.append(side)
        time.sleep(0.05)
        return torch.ones(3)

    def make(device, dtype):
        return Case(torch=lambda: slow("torch"), cnnext=lambda: slow("cnnext"), grad_enabled=False)

    row = Row(section="conv", name="slow", pass_="fwd", shape="-", make=make, flops=1e6)
    result = run_row(row, "cpu", torch.float32, dict(TINY_TIMING, row_cap_s=0.01)).result
    assert result["status"] == "ok" and result["timed"] and result["timed_by_gate"]
    assert calls == ["torch", "cnnext"] and result["torch"]["reps"] == result["cnnext"]["reps"] == 1
    assert result["torch"]["median_ms"] >= 50


def test_fused_inference_rows_pass_the_gate_and_are_listed():
    """convert(model, fuse=True) against the plain torch model: the gate (float32 logits and
    float64 outputs) passes; the suite lists a fused inference row per configuration for the
    models whose fusion gain it reports."""
    row = Row(section="model", name=TINY_MODEL.name, pass_="inference fused",
              shape=TINY_MODEL.shape(4),
              make=partial(models.model_case, TINY_MODEL, 4, False, fuse=True),
              flops_fn=partial(models._model_flops, TINY_MODEL, 4, False))
    assert run_row(row, "cpu", torch.float32, TINY_TIMING).result["status"] == "ok"
    listed = {(r.name, r.config) for r in models.model_rows(False, ("f32-nchw",))
              if r.pass_ == "inference fused"}
    assert listed == {(name, "f32-nchw") for name in models.FUSED_MODELS}

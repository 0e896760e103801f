"""One row of the suite: build both sides, prove they agree, then time them interleaved.

The correctness gate runs before any timing: a side that raises is an ERROR, a result that
differs from torch's beyond the dtype's tolerance is FAILED; neither is ever timed."""
import math
import time
from dataclasses import dataclass, field

import torch

from . import machine
from .timing import CpuLoad, Samples, interleaved, synchronize, time_call

# Largest error allowed, relative to the largest magnitude of torch's result tensor. float32
# differs from torch only by summation order; half types are computed in float32 by cnnext
# on the CPU and rounded once, while torch may round in between.
TOLERANCES = {
    torch.float64: 1e-10,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 4e-2,
}
# Whole models chain dozens of layers (and BatchNorm divides by small variances).
MODEL_TOLERANCE_SCALE = 10.0
# In the float64 model check, gradients below this fraction of the largest one are measured
# against it: they are zero in exact arithmetic and hold only rounding (MobileNet's and
# EfficientNet's projection BatchNorm biases: 1e-17 to 5e-15 on both sides, differing by
# 100%). At 1e-6, MobileNetV2's first projection bias (5e-15, sums over 8 x 112^2 pixels,
# largest gradient 1.6) read as 3.8e-9 against the 1e-9 tolerance; at 1e-4 a difference must
# still stay below 1e-13 of the largest gradient there.
EXACT_NOISE_FLOOR = 1e-4

OK, FAILED, ERROR, UNAVAILABLE = "ok", "FAILED", "ERROR", "n/a"


class Unavailable(Exception):
    """The cnnext side of a row does not exist in this build (e.g. an op not merged yet)."""


@dataclass
class Case:
    """Zero-argument callables computing the row on each side; each returns a tensor or a
    tuple of tensors (the forward output, then the gradients)."""

    torch: object
    cnnext: object
    grad_enabled: bool = True
    # Optional, for deep networks in float32/half: () -> (torch result, cnnext result), both
    # computed in float64. Deep BatchNorm networks amplify rounding chaotically (two correct
    # float32 runs of ResNet-18's training step differ by percents in some gradients), so
    # every output is proven equal in float64, where rounding is 1e-16; in the run's dtype
    # only the first result (the logits, or the loss) is compared.
    exact: object = None


@dataclass
class Row:
    section: str  # "census_conv", "census_pool", "model", "conv", "pool", "gemm"
    name: str
    pass_: str  # "fwd", "fwd+bwd", "inference", "train step"
    shape: str
    make: object  # (device, dtype) -> Case
    config: str = None  # a key of configs.CONFIGS (dtype x layout); None: the run's dtype, NCHW
    quick: bool = False
    flops: float = None
    bytes: float = None
    spec: object = None
    dtype_override: object = None
    flops_fn: object = None  # (device, dtype) -> flops, for rows that count them by tracing
    tags: str = ""  # more words --filter searches (the architectures a census layer comes from)
    timing: dict = None  # overrides the run's timing for this row (models: fewer repetitions)
    result: dict = field(default_factory=dict)

    @property
    def label(self):
        return f"{self.name} {self.pass_}" + (f" [{self.config}]" if self.config else "")


def _as_tuple(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _largest(t):
    return t.detach().nan_to_num(0.0).abs().max().item() if t is not None and t.numel() else 0.0


def compare(expected, actual, floor=0.0):
    """Largest |difference| over all result tensors, each relative to the largest magnitude of
    torch's tensor, or to `floor` x the largest magnitude of all of torch's tensors if that is
    more (a gradient that is zero in exact arithmetic, such as a BatchNorm bias whose shift
    the next train-mode BatchNorm removes, is pure rounding on both sides); inf for a
    shape/dtype mismatch, nan if either side produced a nan where the other did not."""
    expected, actual = _as_tuple(expected), _as_tuple(actual)
    if len(expected) != len(actual):
        return math.inf
    overall = max(map(_largest, expected), default=0.0) * floor if floor else 0.0
    worst = 0.0
    for e, a in zip(expected, actual):
        if e is None or a is None:
            if e is not a:
                return math.inf
            continue
        if e.shape != a.shape or e.dtype != a.dtype:
            return math.inf
        if not e.numel():
            continue
        # float32 is exact enough for a difference judged at 1e-4 (half types at 1e-2).
        wide = torch.float64 if e.dtype == torch.float64 else torch.float32
        e, a = e.detach().to(wide), a.detach().to(wide)
        diff = (e - a).abs().max().item()
        if not math.isfinite(diff):  # a nan or inf somewhere: they must sit in the same places
            if not torch.equal(torch.isnan(e), torch.isnan(a)):
                return math.nan
            e, a = e.nan_to_num(0.0), a.nan_to_num(0.0)
            diff = (e - a).abs().max().item()
        scale = max(e.abs().max().item(), overall, 1e-30)
        worst = max(worst, diff / scale)
    return worst


def _timed_call(fn, device, samples):
    synchronize(device)
    box = []
    elapsed, faults = time_call(lambda: box.append(fn()), device)
    samples.times.append(elapsed)
    samples.page_faults += faults
    return box[0]


def _affordable(timing, pair_seconds):
    """The timing settings, with fewer calls when one call of each side (as the gate measured
    it) is so slow that warm-up + min_reps would pass timing["row_cap_s"] (a scalar fallback,
    e.g. torch's bfloat16 on a CPU without AMX or AVX512-BF16, takes seconds per layer): then
    no warm-up (the gate's calls were one) and as many repetitions as fit; None when not even
    one more pair fits (the gate's own calls are then the sample). The key row_cap_s stays in
    the result only when the calls were cut."""
    timing = dict(timing)
    cap = timing.pop("row_cap_s", None)
    if cap is None or pair_seconds <= 0:
        return timing
    affordable = int(cap // pair_seconds)
    if affordable >= timing.get("warmup", 0) + timing.get("min_reps", 1):
        return timing
    if affordable < 1:
        return None
    return dict(timing, warmup=0, min_reps=min(timing.get("min_reps", 1), affordable), row_cap_s=cap)


def run_row(row, device, dtype, timing, progress=None):
    """Fills row.result: status, error, max_error, then for rows that pass the gate the
    timings of both sides, ratio, throughput and fraction of the machine's limit."""
    dtype = row.dtype_override or dtype
    res = row.result
    res.clear()
    res.update(status=OK, error=None, max_error=None, tolerance=None, timed=False)
    try:
        case = row.make(device, dtype)
    except Unavailable as exc:
        res.update(status=UNAVAILABLE, error=str(exc))
        return row
    except Exception as exc:  # a side that cannot even be built is an error of that row
        res.update(status=ERROR, error=f"setup: {type(exc).__name__}: {exc}")
        return row

    tolerance = TOLERANCES[dtype] * (MODEL_TOLERANCE_SCALE if row.section == "model" else 1.0)
    res["tolerance"] = tolerance
    load = CpuLoad()
    with torch.set_grad_enabled(case.grad_enabled):
        gate = {side: Samples() for side in ("torch", "cnnext")}  # the gate's calls, timed
        results = {}
        for side in gate:
            try:
                results[side] = _timed_call(getattr(case, side), device, gate[side])
            except Exception as exc:
                res.update(status=ERROR, error=f"{side}: {type(exc).__name__}: {exc}")
                return row
        expected, actual = results["torch"], results["cnnext"]
        del results
        against = "torch"
        if case.exact is not None:
            exact_error = compare(*case.exact(), floor=EXACT_NOISE_FLOOR)
            res["float64_max_error"] = exact_error
            exact_tolerance = TOLERANCES[torch.float64] * MODEL_TOLERANCE_SCALE
            if not exact_error <= exact_tolerance:
                res.update(status=FAILED, max_error=exact_error, tolerance=exact_tolerance,
                           error=f"cnnext differs from torch in float64: max relative error "
                                 f"{exact_error:.3g} > tolerance {exact_tolerance:.0e}")
                return row
            expected, actual = _as_tuple(expected)[:1], _as_tuple(actual)[:1]
            against = "torch (first output; all outputs agree in float64)"
        error = compare(expected, actual)
        del expected, actual
        res["max_error"] = error
        if not error <= tolerance:  # also catches nan
            res.update(status=FAILED, error=f"cnnext differs from {against}: max relative "
                                            f"error {error:.3g} > tolerance {tolerance:.1e}")
            return row

        timing = _affordable(timing, sum(gate[side].times[0] for side in gate))
        res["reps_capped"] = timing is None or "row_cap_s" in timing
        if timing is None:  # one call of each side passes the cap: the gate's calls are the sample
            samples = gate
            res["timed_by_gate"] = True
        else:
            timing.pop("row_cap_s", None)
            samples = interleaved({"torch": case.torch, "cnnext": case.cnnext}, device, **timing)
    res["timed"] = True
    res["other_cpu_load"] = load.other_load()
    for side, s in samples.items():
        res[side] = s.summary()
    res["ratio"] = res["torch"]["median_ms"] / res["cnnext"]["median_ms"]
    if row.flops_fn is not None and row.flops is None:
        row.flops = row.flops_fn(device, dtype)
    res["flops"] = row.flops
    res["bytes"] = row.bytes
    for side in ("torch", "cnnext"):
        seconds = res[side]["median_ms"] / 1e3
        if row.flops:
            res[side]["gflops"] = row.flops / seconds / 1e9
        if row.bytes:
            res[side]["gbps"] = row.bytes / seconds / 1e9
    return row


def add_fractions(rows, gemm_peak_gflops, copy_curve, bf16_peak_gflops=None):
    """Fraction of the machine's limit: for pooling rows the copy bandwidth measured for a
    working set of the row's size (machine.copy_gbps_at); for conv, GEMM and model rows the
    float32 GEMM peak, or the bfloat16 peak (AMX) for bfloat16 rows."""
    for row in rows:
        res = row.result
        if not res.get("timed"):
            continue
        bf16 = row.dtype_override == torch.bfloat16
        flops_peak = bf16_peak_gflops if bf16 and bf16_peak_gflops else gemm_peak_gflops
        copy_limit = machine.copy_gbps_at(copy_curve, row.bytes) if row.bytes and copy_curve else None
        for side in ("torch", "cnnext"):
            if "gbps" in res[side] and copy_limit:
                res[side]["fraction_of_peak"] = res[side]["gbps"] / copy_limit
            elif "gflops" in res[side] and flops_peak:
                res[side]["fraction_of_peak"] = res[side]["gflops"] / flops_peak

"""The whole run: measure the machine's limits, run every selected row with a progress bar,
measure peak memory of the largest layers, then hand everything to the report."""
import math
import re
import sys
import time
from dataclasses import dataclass, field

import torch

from . import census_rows, layers, machine, memory, models
from .configs import DEFAULT_CONFIGS
from .report import write_all
from .suite import add_fractions, run_row
from .summaries import best_layout, geomeans

DISTURBED_THRESHOLD = 0.25  # other processes' share of the CPUs that makes a row suspect


@dataclass
class Config:
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    quick: bool = True
    threads: int = 0  # 0: torch's default
    filter: str = None
    out_dir: str = "bench-out"
    retries: int = 0  # reruns of a row disturbed by other processes
    progress: bool = True
    configs: tuple = DEFAULT_CONFIGS  # keys of configs.CONFIGS for the census and model rows
    timing: dict = field(default_factory=dict)  # per row (census, the old suite, GEMM)
    model_timing: dict = field(default_factory=dict)  # per model row
    gemm_peak_sizes: list = None
    gemm_peak_reps: int = None
    copy_sizes_mib: list = None
    copy_reps: int = None
    memory_layers: int = None  # how many of the largest conv layers get a memory measurement


def defaults(config):
    """Fills what the user left unset from --quick/--full (and the device)."""
    quick, cuda = config.quick, config.device == "cuda"
    # ~6000 timed rows in --full (986 census layers x 3 configurations x 2 passes): the gate's
    # call is the warm-up, a median of 3 and a short budget per row; a row whose single call
    # passes row_cap_s (a scalar fallback) gets fewer calls (suite._affordable).
    if not config.timing:
        config.timing = (dict(warmup=1, min_reps=3, max_reps=100, budget_s=0.1, row_cap_s=1.5) if quick
                         else dict(warmup=0, min_reps=3, max_reps=200, budget_s=0.05, row_cap_s=2.0))
    if not config.model_timing:
        config.model_timing = (dict(warmup=0, min_reps=3, max_reps=20, budget_s=0.3, row_cap_s=5.0) if quick
                               else dict(warmup=0, min_reps=3, max_reps=50, budget_s=1.0, row_cap_s=10.0))
    if config.gemm_peak_sizes is None:
        config.gemm_peak_sizes = ([4096, 8192] if cuda else [1024, 2048] if quick else [1024, 2048, 4096])
    if config.gemm_peak_reps is None:
        config.gemm_peak_reps = 3 if quick else 8
    if config.copy_sizes_mib is None:
        config.copy_sizes_mib = [256, 1024] if cuda else [8, 32, 256] if quick else [8, 16, 32, 64, 256, 1024]
    if config.copy_reps is None:
        config.copy_reps = 5 if quick else 15
    if config.memory_layers is None:
        config.memory_layers = 1 if quick else 3
    return config


def select_rows(config):
    """The census rows in every configuration, the model rows, the GEMM rows, and (--full
    only) the old 16-layer suite in the run's dtype. --filter keeps the rows whose name,
    section/name or source architectures match."""
    element_size = torch.empty((), dtype=config.dtype).element_size()
    rows = (census_rows.census_rows(config.configs) + models.model_rows(config.quick, config.configs)
            + layers.gemm_rows())
    if not config.quick:
        rows += layers.conv_rows() + layers.pool_rows(element_size)
    else:
        rows = [r for r in rows if r.quick]
    for row in rows:
        if row.section == "model":
            row.timing = config.model_timing
    if config.filter:
        pattern = re.compile(config.filter)
        rows = [r for r in rows if pattern.search(r.name) or pattern.search(f"{r.section}/{r.name}")
                or (r.tags and pattern.search(r.tags))]
    return rows


def _progress(total, enabled):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="row", file=sys.stderr, dynamic_ncols=True,
                mininterval=0.1 if sys.stderr.isatty() else 5.0,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}")


def run_suite(config, rows=None):
    """Runs the rows (default: those config selects) and writes table, JSON and PNG to
    config.out_dir. Returns (rows, summary, table_text, paths)."""
    config = defaults(config)
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(0)
    rows = select_rows(config) if rows is None else rows
    memory_specs = layers.largest_layers(config.memory_layers) if config.memory_layers else []
    if config.filter:
        memory_specs = [s for s in memory_specs if re.search(config.filter, s.name)]

    bar = _progress(len(rows) + 2 + len(memory_specs), config.progress)

    def step(text):
        if bar is not None:
            bar.set_postfix_str(text, refresh=True)

    step("machine limits: GEMM peak")
    gemm_peak, gemm_curve = machine.gemm_peak(config.device, config.dtype, config.gemm_peak_sizes,
                                              config.gemm_peak_reps)
    bar and bar.update()
    step("machine limits: copy bandwidth")
    copy_gbps, copy_curve = machine.copy_bandwidth(config.device, config.copy_sizes_mib, config.copy_reps)
    bf16_peak, bf16_facts = None, {}
    if any(r.dtype_override == torch.bfloat16 for r in rows):
        step("machine limits: bfloat16 peak")
        bf16_peak, bf16_facts = machine.bf16_peak(config.device, torch.get_num_threads(), gemm_peak)
    bar and bar.update()

    interrupted = False
    try:
        _run_rows(rows, config, step, bar)
    except KeyboardInterrupt:
        # Ctrl-C (or SIGTERM): report what was measured; the rest is marked as not run.
        interrupted = True
        for row in rows:
            if not row.result or not row.result.get("status"):
                row.result.update(status="not run", error="interrupted", timed=False)
            elif not row.result.get("timed") and row.result.get("status") == "ok":
                row.result.update(status="not run", error="interrupted")
        memory_specs = []

    mem = []
    for spec in memory_specs:
        step(f"memory {spec.name}")
        for side in ("torch", "cnnext"):
            mem.append(memory.measure_in_subprocess(spec.name, side, config.device,
                                                    str(config.dtype).replace("torch.", ""),
                                                    torch.get_num_threads()))
        bar and bar.update()
    if bar is not None:
        bar.close()

    add_fractions(rows, gemm_peak, copy_curve, bf16_peak)
    summary = {
        "machine": machine.facts(config.device, config.dtype),
        "run": {"mode": "quick" if config.quick else "full", "filter": config.filter,
                "configs": list(config.configs), "interrupted": interrupted,
                "timing": config.timing, "model_timing": config.model_timing, "rows": len(rows),
                "disturbed_threshold": DISTURBED_THRESHOLD,
                "disturbed_rows": sum(bool(r.result.get("disturbed")) for r in rows),
                "failed_rows": [r.label for r in rows if r.result.get("status") in ("FAILED", "ERROR")],
                "unavailable_rows": [r.label for r in rows if r.result.get("status") == "n/a"],
                "wall_s": time.perf_counter() - started},
        "peaks": {"gemm_gflops": gemm_peak, "gemm_curve": gemm_curve,
                  "copy_gbps": copy_gbps, "copy_curve": copy_curve,
                  "bf16_gflops": bf16_peak, **bf16_facts},
        "geomeans": geomeans(rows),
        "best_layout": best_layout(rows),
        "memory": mem,
    }
    text, paths = write_all(rows, summary, config.out_dir)
    return rows, summary, text, paths


def _run_rows(rows, config, step, bar):
    for row in rows:
        step(row.label)
        started = time.perf_counter()
        for attempt in range(1 + config.retries):
            previous = dict(row.result) if attempt else None
            run_row(row, config.device, config.dtype, row.timing or config.timing)
            res = row.result
            load = res.get("other_cpu_load")
            res["disturbed"] = bool(load is not None and load >= DISTURBED_THRESHOLD)
            if previous and previous.get("other_cpu_load", math.inf) <= (load or 0):
                row.result.clear()
                row.result.update(previous)  # keep the quieter attempt
            if not row.result.get("disturbed"):
                break
        row.result["row_wall_s"] = time.perf_counter() - started  # what the row cost the run
        bar and bar.update()

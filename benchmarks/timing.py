"""How a row is timed: both sides in one process, interleaved, warm-up first, median of many
runs within a time budget; page faults and other processes' CPU use recorded per row.

CPU calls are timed with perf_counter around a synchronous call. CUDA calls are timed with
events recorded on the current stream after a synchronisation, so queued work never leaks
into a sample."""
import os
import resource
import statistics
import time
from dataclasses import dataclass, field

import torch


@dataclass
class Samples:
    """Per-call wall times (seconds) of one side of a row, and its minor page faults."""

    times: list = field(default_factory=list)
    page_faults: int = 0

    def summary(self):
        t = sorted(self.times)
        q = statistics.quantiles(t, n=4) if len(t) >= 2 else [t[0], t[0], t[0]]
        return {
            "median_ms": statistics.median(t) * 1e3,
            "min_ms": t[0] * 1e3,
            "iqr_ms": (q[2] - q[0]) * 1e3,
            "reps": len(t),
            "page_faults_per_call": self.page_faults / len(t),
        }


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_call(fn, device):
    """Seconds taken by one call of fn, and the page faults it caused (0 on CUDA)."""
    if device == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, 0
    faults = _minor_faults()
    t0 = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - t0
    return elapsed, _minor_faults() - faults


class CpuLoad:
    """CPU time used by processes other than this one while a row ran, from /proc/stat, as a
    fraction of the cores available (0 = quiet machine). None where /proc/stat is missing."""

    def __init__(self):
        self.start = self._snapshot()

    @staticmethod
    def _busy_jiffies():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except OSError:
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]) - idle

    def _snapshot(self):
        own = resource.getrusage(resource.RUSAGE_SELF)
        return self._busy_jiffies(), own.ru_utime + own.ru_stime, time.perf_counter()

    def other_load(self):
        busy0, own0, t0 = self.start
        busy1, own1, t1 = self._snapshot()
        if busy0 is None or t1 <= t0:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        others = (busy1 - busy0) / hz - (own1 - own0)
        cores = os.cpu_count() or 1
        return max(0.0, others / ((t1 - t0) * cores))


def interleaved(sides, device, warmup=2, min_reps=5, max_reps=200, budget_s=1.0):
    """Times every callable of `sides` (name -> fn) alternately: each repetition runs every
    side once, the order reversed on every other repetition so neither side always follows
    the other. Stops after max_reps, or once min_reps are done and budget_s is spent.
    Returns name -> Samples."""
    names = list(sides)
    for _ in range(warmup):
        for name in names:
            sides[name]()
    synchronize(device)
    samples = {name: Samples() for name in names}
    started = time.perf_counter()
    for rep in range(max_reps):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            elapsed, faults = time_call(sides[name], device)
            samples[name].times.append(elapsed)
            samples[name].page_faults += faults
        if rep + 1 >= min_reps and time.perf_counter() - started >= budget_s:
            break
    return samples


def best_time(fn, device, reps, warmup=1):
    """Shortest of `reps` calls: for the machine's limits, the best the machine can do."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    return min(time_call(fn, device)[0] for _ in range(reps))

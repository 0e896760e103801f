"""The machine: facts (CPU, cores, versions, commit) and its limits measured in this run:
GEMM peak (torch.mm on large squares) and copy bandwidth (a large dst.copy_(src), counting
bytes read + written)."""
import datetime
import math
import os
import platform
import subprocess
import sys

import torch

from .timing import best_time


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
                            if f in flags]
    except OSError:
        pass
    return []


def _git_commit():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (commit + ("-dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def facts(device, dtype):
    import cnnext

    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": " ".join([os.path.basename(sys.executable), "-m", "benchmarks"] + sys.argv[1:]),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cnnext": getattr(cnnext, "__version__", None),
        "cnnext_commit": _git_commit(),
        "device": device,
        "dtype": str(dtype).replace("torch.", ""),
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "malloc_env": {k: os.environ[k] for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
                       if k in os.environ},
        "mkldnn_enabled": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info


def gemm_peak(device, dtype, sizes, reps):
    """GFLOP/s of torch.mm on n x n squares (best of reps per size); the peak is the best size."""
    curve = []
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        out = torch.empty(n, n, device=device, dtype=dtype)
        seconds = best_time(lambda: torch.mm(a, b, out=out), device, reps)
        curve.append({"n": n, "gflops": 2 * n**3 / seconds / 1e9})
        del a, b, out
    return max(p["gflops"] for p in curve), curve


def copy_bandwidth(device, sizes_mib, reps):
    """GB/s of dst.copy_(src) moving sizes_mib MiB (half read, half written; best of reps)."""
    curve = []
    for mib in sizes_mib:
        elements = mib * 2**20 // 2 // 4
        src = torch.randn(elements, device=device)
        dst = torch.empty_like(src)
        seconds = best_time(lambda: dst.copy_(src), device, reps)
        curve.append({"mib": mib, "gbps": 2 * elements * 4 / seconds / 1e9})
        del src, dst
    return max(p["gbps"] for p in curve), curve


def copy_gbps_at(curve, nbytes):
    """The copy bandwidth for a working set of nbytes moved: the measured curve (GB/s against
    MiB moved) interpolated in log size, clamped to its ends. A pooling row of 1 MiB runs in
    cache and one of 1 GiB from DRAM, so each is held to the copy that moves as much."""
    points = sorted((p["mib"] * 2**20, p["gbps"]) for p in curve)
    if not points:
        return None
    if nbytes <= points[0][0]:
        return points[0][1]
    for (s0, g0), (s1, g1) in zip(points, points[1:]):
        if nbytes <= s1:
            f = math.log(nbytes / s0) / math.log(s1 / s0)
            return g0 + f * (g1 - g0)
    return points[-1][1]


def _cpu_mhz():
    """The clock Linux reports for the first CPU (/proc/cpuinfo "cpu MHz"), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


AMX_BF16_FLOP_PER_CYCLE = 1024  # TDPBF16PS: a 16x32 by 32x16 bf16 tile product per 16 cycles


def bf16_peak(device, threads, gemm_peak_gflops, reps=2, size=1024):
    """The bfloat16 limit. With AMX-BF16: threads x clock x 1024 FLOP/cycle (the tile unit's
    rate), and torch.mm in bfloat16 on a 1024 square measured beside it (milliseconds there).
    Without AMX, with AVX512-BF16: VDPBF16PS's rate measured on registers on every thread
    (cnnext's _cpu_bf16_dot_peak; twice the float32 GEMM peak where CNNEXT_ISA hides it);
    else the float32 GEMM peak (bfloat16 computed through float32 FMAs). Returns (GFLOP/s,
    facts)."""
    flags = _cpu_flags() if device == "cpu" else []
    mhz = _cpu_mhz() if device == "cpu" else None
    if device != "cpu":
        peak, curve = gemm_peak(device, torch.bfloat16, [4096], reps)
        return peak, {"bf16_peak_source": "torch.mm bfloat16, measured", "bf16_mm_gflops": peak}
    if "amx_bf16" in flags and mhz:
        measured, _ = gemm_peak(device, torch.bfloat16, [size], reps)
        return threads * mhz * 1e6 * AMX_BF16_FLOP_PER_CYCLE / 1e9, {
            "bf16_peak_source": f"AMX estimate: {threads} cores x {mhz:.0f} MHz (/proc/cpuinfo) x "
                                f"{AMX_BF16_FLOP_PER_CYCLE} FLOP/cycle",
            "bf16_mm_gflops": measured}
    if "avx512_bf16" in flags:
        import cnnext  # noqa: F401  (the operators)

        # VDPBF16PS on registers only, every thread: the instruction's own rate.
        measured = max(torch.ops.cnnext._cpu_bf16_dot_peak(5_000_000) for _ in range(max(reps, 2)))
        if measured > 0:
            return measured, {"bf16_peak_source": "no AMX: VDPBF16PS register-only loop, measured"}
        return 2 * gemm_peak_gflops, {"bf16_peak_source": "no AMX: 2 x the float32 GEMM peak (AVX512-BF16)"}
    return gemm_peak_gflops, {"bf16_peak_source": "no AMX or AVX512-BF16: the float32 GEMM peak"}

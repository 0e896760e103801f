"""The machine: facts (CPU, cores, versions, commit) and its limits measured in this run:
GEMM peak (torch.mm on large squares) and copy bandwidth (a large dst.copy_(src), counting
bytes read + written)."""
import datetime
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


AMX_BF16_FLOP_PER_CYCLE = 1024  # TDPBF16PS: 16x32 bf16 pairs into 16x16 float32 per 16 cycles


def bf16_peak(device, threads, sizes, reps):
    """The bfloat16 limit: on a CPU with AMX-BF16, cores x clock x 1024 FLOP/cycle (the tile
    unit's rate; torch.mm in bfloat16 is measured beside it); elsewhere the best GFLOP/s of
    torch.mm in bfloat16. Returns (peak GFLOP/s, facts)."""
    measured, curve = gemm_peak(device, torch.bfloat16, sizes, reps)
    facts = {"bf16_mm_gflops": measured, "bf16_mm_curve": curve}
    mhz = _cpu_mhz() if device == "cpu" else None
    if device == "cpu" and "amx_bf16" in _cpu_flags() and mhz:
        peak = threads * mhz * 1e6 * AMX_BF16_FLOP_PER_CYCLE / 1e9
        facts.update(bf16_peak_source=f"AMX estimate: {threads} cores x {mhz:.0f} MHz (/proc/cpuinfo) x "
                                      f"{AMX_BF16_FLOP_PER_CYCLE} FLOP/cycle")
    else:
        peak = measured
        facts.update(bf16_peak_source="torch.mm bfloat16, measured")
    return peak, facts

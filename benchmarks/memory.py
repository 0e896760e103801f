"""Peak extra memory of one side of a conv layer, measured in a fresh process so neither
side's allocator caches or workspaces hide the other's.

CPU: the process's resident set (RSS) is recorded after the inputs exist; then the forward
runs once (no grad), its output is freed, and forward+backward runs once. The peak RSS
during each comes from getrusage's ru_maxrss (the kernel's exact high-water mark), combined
with a psutil sampler thread (every 0.5 ms) for peaks lower than an earlier high-water mark.
Extra memory = peak - RSS before; it includes the outputs and gradients themselves, which
are also reported so the rest (workspace) can be read off. glibc's default allocator is used
(large blocks are mmap'ed and returned on free), so RSS follows live memory.
CUDA: torch.cuda.max_memory_allocated over the call (the caching allocator's view).

Run as: python -m benchmarks.memory LAYER SIDE DEVICE DTYPE THREADS  (prints one JSON line)."""
import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time

import psutil
import torch


class _RssSampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.process = psutil.Process()
        self.peak = 0
        self.running = True

    def run(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.0005)

    def stop(self):
        self.running = False
        self.join()
        return self.peak


def _measure_cpu(call):
    gc.collect()
    before = psutil.Process().memory_info().rss
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sampler = _RssSampler()
    sampler.start()
    result = call()
    sampled = sampler.stop()
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = max(sampled, maxrss_after if maxrss_after > maxrss_before else 0)
    return max(0, peak - before), result


def _measure_cuda(call):
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = call()
    torch.cuda.synchronize()
    return max(0, torch.cuda.max_memory_allocated() - before), result


def measure(layer_name, side, device, dtype_name, threads):
    import torch.nn.functional as F

    import cnnext

    from .layers import CONV_LAYERS, _forward_and_grads

    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    spec = next(s for s in CONV_LAYERS if s.name == layer_name)
    conv = cnnext.functional.conv2d if side == "cnnext" else F.conv2d
    args = dict(stride=spec.stride, padding=spec.padding, dilation=spec.dilation, groups=spec.groups)
    # Library start-up (thread pools, primitive caches) on a tiny layer is not the layer's cost.
    tiny = torch.randn(2, spec.c_in, 9, 9, device=device, dtype=dtype, requires_grad=True)
    tiny_w = torch.randn(spec.c_out, spec.c_in // spec.groups, spec.k, spec.k, device=device,
                         dtype=dtype, requires_grad=True)
    conv(tiny, tiny_w, None, groups=spec.groups, padding=spec.k).sum().backward()
    del tiny, tiny_w

    x = torch.randn(spec.n, spec.c_in, spec.hw, spec.hw, device=device, dtype=dtype)
    weight = torch.randn(spec.c_out, spec.c_in // spec.groups, spec.k, spec.k, device=device, dtype=dtype)
    bias = torch.randn(spec.c_out, device=device, dtype=dtype)
    grad_output = torch.randn(spec.n, spec.c_out, spec.out_hw, spec.out_hw, device=device, dtype=dtype)
    measure_call = _measure_cuda if device == "cuda" else _measure_cpu

    with torch.no_grad():
        fwd, out = measure_call(lambda: conv(x, weight, bias, **args))
    output_bytes = out.numel() * out.element_size()
    del out
    inputs = [t.requires_grad_() for t in (x, weight, bias)]
    bwd, results = measure_call(lambda: _forward_and_grads(lambda *a: conv(*a, **args), inputs, grad_output))
    result_bytes = sum(t.numel() * t.element_size() for t in results)
    return {"layer": layer_name, "side": side, "fwd_extra_bytes": fwd, "fwd_output_bytes": output_bytes,
            "fwdbwd_extra_bytes": bwd, "fwdbwd_result_bytes": result_bytes}


def measure_in_subprocess(layer_name, side, device, dtype_name, threads, timeout=300):
    """Runs measure() in a fresh interpreter with glibc's default allocator settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", layer_name, side, device, dtype_name, str(threads)],
        cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"layer": layer_name, "side": side,
                "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    layer, side, device, dtype_name, threads = sys.argv[1:6]
    print(json.dumps(measure(layer, side, device, dtype_name, int(threads))))

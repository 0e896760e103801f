"""Interleaved A/B of channels_last pooling's cache treatment on large rows (forward, 2 threads).

plain: CNNEXT_POOL_STREAM=0 (no prefetch, plain stores); auto: the default rule (prefetch above
half the last-level cache moved, non-temporal stores above the whole cache); forced:
CNNEXT_POOL_STREAM=1 (both, whatever the size). GB/s = (input + output bytes) / median time.
Run: MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1099511627776 MALLOC_TOP_PAD_=67108864 \
     PYTHONPATH=. python benchmarks/results/2026-12-02-pool-stream-after/ab_streaming.py"""
import os, sys, time, statistics, torch, torch.nn.functional as F
import cnnext.functional as CF
torch.set_num_threads(2)
rows = [
  ("resnet maxpool 8x64x112 k3s2p1", (8, 64, 112, 112), "max", dict(kernel_size=3, stride=2, padding=1)),
  ("resnet maxpool+idx 8x64x112", (8, 64, 112, 112), "maxi", dict(kernel_size=3, stride=2, padding=1)),
  ("vgg maxpool 8x64x224 k2", (8, 64, 224, 224), "max", dict(kernel_size=2)),
  ("vgg maxpool 8x128x112 k2", (8, 128, 112, 112), "max", dict(kernel_size=2)),
  ("densenet avg 8x128x56 k2", (8, 128, 56, 56), "avg", dict(kernel_size=2)),
  ("densenet avg 8x256x28 k2", (8, 256, 28, 28), "avg", dict(kernel_size=2)),
  ("inception max 8x64x147 k3s2", (8, 64, 147, 147), "max", dict(kernel_size=3, stride=2)),
  ("avg 8x64x112 k3s2p1", (8, 64, 112, 112), "avg", dict(kernel_size=3, stride=2, padding=1)),
]
dtypes = [torch.float32, torch.bfloat16]
for name, shape, kind, args in rows:
  for dt in dtypes:
    x = torch.randn(shape).to(dt).contiguous(memory_format=torch.channels_last)
    f = (lambda: CF.max_pool2d(x, **args)) if kind == "max" else (lambda: CF.avg_pool2d(x, **args))
    g = (lambda: F.max_pool2d(x, **args)) if kind == "max" else (lambda: F.avg_pool2d(x, **args))
    if kind == "maxi":
      f = lambda: CF.max_pool2d(x, return_indices=True, **args)
      g = lambda: F.max_pool2d(x, return_indices=True, **args)
    out = g()
    if kind == "maxi": out = torch.cat([out[0].flatten().float(), out[1].flatten().double()])
    nbytes = x.numel() * x.element_size() + out.numel() * out.element_size()
    ts = {"0": [], "auto": [], "1": [], "torch": []}
    with torch.no_grad():
      for _ in range(3): f(); g()
      for it in range(25):
        for m in ("0", "auto", "1", "torch"):
          if m in ("0", "1"): os.environ["CNNEXT_POOL_STREAM"] = m
          else: os.environ.pop("CNNEXT_POOL_STREAM", None)
          t = time.perf_counter(); (f if m != "torch" else g)(); ts[m].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in ts.items()}
    print(f"{name:34s} {str(dt)[6:]:9s} {nbytes/2**20:6.1f} MiB  plain {nbytes/med['0']/1e9:5.1f}  auto {nbytes/med['auto']/1e9:5.1f}  forced {nbytes/med['1']/1e9:5.1f} GB/s  torch {nbytes/med['torch']/1e9:5.1f} GB/s  auto/plain {med['0']/med['auto']:.2f}x  forced/plain {med['0']/med['1']:.2f}x", flush=True)
os.environ.pop("CNNEXT_POOL_STREAM", None)

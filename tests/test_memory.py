"""Memory: no leak over 10,000 forward+backward calls, and the conv workspace does not grow with
the batch. Each measurement runs in a fresh subprocess, so peak RSS (ru_maxrss) belongs to it
alone. The figures are printed (pytest -s, or -rA) for the record."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

MiB = 1 << 20
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_child(code, timeout=600):
    """Runs code in a fresh interpreter importing this tree's cnnext; returns its JSON line."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- no leak -------------------------------------------------------------------------------
LEAK_CHILD = """
import json, sys
import psutil, torch
import cnnext
torch.set_num_threads(1)  # the allocations are the same; 2 threads only add contention
fn = cnnext.functional
calls, warmup = {calls}, {warmup}
x = torch.randn(2, 8, 16, 16, requires_grad=True)
w = torch.randn(8, 8, 3, 3, requires_grad=True)
b = torch.randn(8, requires_grad=True)
pool = hasattr(fn, 'max_pool2d')

def step():
    y = fn.conv2d(x, w, b, stride=1, padding=1)
    if pool:
        y = fn.max_pool2d(y, 3, 2, 1) + fn.avg_pool2d(y, 3, 2, 1, count_include_pad=False)
        y = y + fn.adaptive_avg_pool2d(y, (5, 5)).mean() + fn.adaptive_max_pool2d(y, 3).mean()
    y.sum().backward()

proc = psutil.Process()
for _ in range(warmup):
    step()
before = proc.memory_info().rss
for _ in range(calls - warmup):
    step()
after = proc.memory_info().rss
print(json.dumps(dict(before=before, after=after, calls=calls, pool=pool)))
"""


def test_forward_backward_calls_leave_memory_flat():
    result = run_child(LEAK_CHILD.format(calls=10_000, warmup=1_000))
    growth = result["after"] - result["before"]
    print(f"\nRSS after 1000 warm-up calls: {result['before'] / MiB:.1f} MiB; after "
          f"{result['calls']} calls: {result['after'] / MiB:.1f} MiB (growth {growth / MiB:+.2f} "
          f"MiB; pooling {'included' if result['pool'] else 'not built'})")
    # 9,000 calls: a leak of even 1 KiB per call would show as 9 MiB.
    assert growth < 4 * MiB, f"resident memory grew by {growth / MiB:.1f} MiB"


# ---- the conv workspace does not grow with the batch ---------------------------------------
WORKSPACE_CHILD = """
import json, resource
import psutil, torch
import cnnext
torch.set_num_threads({threads})
batch, backward = {batch}, {backward}
# One image's columns: 64*3*3 rows x 56*56 columns of float32 = 7.2 MB.
x = torch.randn(batch, 64, 56, 56)
w = torch.randn(64, 64, 3, 3)
grad = torch.randn(batch, 64, 56, 56)
kb = 1024
with torch.no_grad():
    # Warm-up on one image: libraries, thread pool, allocator arenas.
    torch.ops.cnnext.conv2d(x[:1], w, None, [1, 1], [1, 1], [1, 1], 1)
    torch.ops.cnnext.conv2d_backward(grad[:1], x[:1], w, [1, 1], [1, 1], [1, 1], 1,
                                     [True, True, False])
    base = psutil.Process().memory_info().rss
    if backward:
        gi, gw, _ = torch.ops.cnnext.conv2d_backward(grad, x, w, [1, 1], [1, 1], [1, 1], 1,
                                                     [True, True, False])
        results = gi.numel() * 4 + gw.numel() * 4
    else:
        out = torch.ops.cnnext.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1)
        results = out.numel() * 4
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kb
print(json.dumps(dict(extra=peak - base - results, peak=peak, base=base, results=results)))
"""


# auto: Winograd forward and grad_input (per-block tile tables and transforms) + im2col
# grad_weight; the other paths forced.
@pytest.mark.parametrize("algo", ["auto", "im2col", "implicit"])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_conv_workspace_does_not_grow_with_batch(monkeypatch, direction, algo):
    monkeypatch.setenv("CNNEXT_CONV_ALGO", algo)
    threads = 2
    extra = {}
    for batch in (threads, 64):
        r = run_child(WORKSPACE_CHILD.format(threads=threads, batch=batch,
                                             backward=direction == "backward"))
        extra[batch] = r["extra"]
        print(f"\n{direction} batch {batch}: peak RSS {r['peak'] / MiB:.0f} MiB, results "
              f"{r['results'] / MiB:.0f} MiB, workspace and other extra {r['extra'] / MiB:.1f} MiB")
    one_image_columns = 64 * 9 * 56 * 56 * 4
    # Columns for the whole batch would add 62 images' worth (450 MB); a bounded workspace
    # adds nothing. Slack: two images' columns (allocator rounding, thread-local buffers).
    growth = extra[64] - extra[threads]
    assert growth < 2 * one_image_columns, (
        f"{direction}: extra peak memory grew by {growth / MiB:.1f} MiB from batch {threads} to "
        f"64 (one image's columns: {one_image_columns / MiB:.1f} MiB)")

"""Threads: concurrent Python threads get the same results as serial calls; the kernels release
the GIL; results do not depend on the OpenMP/torch thread count where the algorithm promises it
(conv forward: one image's arithmetic is the same whoever computes it; pooling: every output and
input-gradient element is computed by one thread in a fixed order), within tolerance otherwise
(conv backward: grad_weight's GEMM may split its reduction differently)."""
import threading
import time

import pytest
import torch
import torch.nn.functional as F

import cnnext
from conftest import assert_close

has_pooling = hasattr(cnnext.functional, "max_pool2d")
needs_pooling = pytest.mark.skipif(not has_pooling, reason="pooling not built")
fn = cnnext.functional


def conv_call(x, w, b):
    return fn.conv2d(x, w, b, stride=(1, 2), padding=1, dilation=(2, 1), groups=2)


POOL_CALLS = {
    "max_pool2d": lambda x: fn.max_pool2d(x, 3, 2, 1, dilation=1, ceil_mode=True,
                                          return_indices=True),
    "max_pool2d_dilated": lambda x: fn.max_pool2d(x, (2, 3), (1, 2), 1, dilation=2,
                                                  return_indices=True),
    "avg_pool2d": lambda x: fn.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
    "adaptive_avg_pool2d": lambda x: fn.adaptive_avg_pool2d(x, (5, 7)),
    "adaptive_max_pool2d": lambda x: fn.adaptive_max_pool2d(x, (5, 7), return_indices=True),
}


def conv_forward_backward(x, w, b, grad):
    x, w, b = (t.detach().requires_grad_() for t in (x, w, b))
    out = conv_call(x, w, b)
    return (out.detach(), *torch.autograd.grad(out, (x, w, b), grad))


def pool_forward_backward(name, x, grad):
    x = x.detach().requires_grad_()
    result = POOL_CALLS[name](x)
    out, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    return (out.detach(), *rest, *torch.autograd.grad(out, x, grad))


def conv_inputs(batch, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 8, 23, 19, generator=g)
    w = torch.randn(6, 4, 3, 3, generator=g)
    b = torch.randn(6, generator=g)
    out_shape = F.conv2d(x, w, b, stride=(1, 2), padding=1, dilation=(2, 1), groups=2).shape
    return x, w, b, torch.randn(out_shape, generator=g)


def pool_inputs(name, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randperm(3 * 5 * 21 * 22, generator=g).reshape(3, 5, 21, 22).double()
    result = POOL_CALLS[name](x)
    out = result[0] if isinstance(result, tuple) else result
    return x, torch.randn(out.shape, generator=g, dtype=torch.float64)


def run_concurrently(jobs, repeats=3):
    """Runs every job in its own thread, all released at once; returns each job's results."""
    results = [None] * len(jobs)
    errors = []
    barrier = threading.Barrier(len(jobs))

    def worker(i, job):
        try:
            barrier.wait()
            results[i] = [job() for _ in range(repeats)]
        except BaseException as e:  # noqa: BLE001  re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i, j)) for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def assert_identical(actual, expected):
    for a, e in zip(actual, expected):
        assert torch.equal(a, e)


def test_conv2d_concurrent_threads_match_serial_calls():
    inputs = [conv_inputs(batch, seed) for seed, batch in enumerate([1, 3, 4, 2])]
    serial = [conv_forward_backward(*args) for args in inputs]
    concurrent = run_concurrently([lambda a=args: conv_forward_backward(*a) for args in inputs])
    for expected, runs in zip(serial, concurrent):
        for got in runs:
            assert torch.equal(got[0], expected[0])  # forward: thread-count independent
            for a, e in zip(got[1:], expected[1:]):
                assert_close(a, e)


@needs_pooling
def test_pooling_concurrent_threads_match_serial_calls():
    jobs, serial = [], []
    for seed, name in enumerate(POOL_CALLS):
        x, grad = pool_inputs(name, seed)
        serial.append(pool_forward_backward(name, x, grad))
        jobs.append(lambda n=name, x=x, g=grad: pool_forward_backward(n, x, g))
    for expected, runs in zip(serial, run_concurrently(jobs)):
        for got in runs:
            assert_identical(got, expected)


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def with_threads(n, fn_, *args):
    torch.set_num_threads(n)
    return fn_(*args)


@pytest.mark.parametrize("batch", [1, 2, 5])  # below, at and above the thread count
def test_conv2d_results_across_thread_counts(batch, restore_threads):
    args = conv_inputs(batch, seed=batch)
    one = with_threads(1, conv_forward_backward, *args)
    two = with_threads(2, conv_forward_backward, *args)
    assert torch.equal(one[0], two[0]), "conv forward must not depend on the thread count"
    for a, e in zip(two[1:], one[1:]):
        assert_close(a, e)


@needs_pooling
@pytest.mark.parametrize("name", list(POOL_CALLS))
def test_pooling_results_identical_across_thread_counts(name, restore_threads):
    x, grad = pool_inputs(name, seed=7)
    one = with_threads(1, pool_forward_backward, name, x, grad)
    two = with_threads(2, pool_forward_backward, name, x, grad)
    assert_identical(two, one)


# ---- the GIL is released while a kernel runs ------------------------------------------------
def largest_stall_during(kernel):
    """Runs kernel() in a thread while this thread keeps stamping the time; returns (kernel
    duration, longest gap between stamps inside it). A kernel holding the GIL stalls this
    thread for its whole duration; one that releases it leaves only scheduler-sized gaps."""
    span = {}

    def worker():
        span["start"] = time.perf_counter()
        kernel()
        span["end"] = time.perf_counter()

    stamps = []
    t = threading.Thread(target=worker)
    t.start()
    while t.is_alive():
        stamps.append(time.perf_counter())
    t.join()
    inside = [s for s in stamps if span["start"] <= s <= span["end"]]
    points = [span["start"], *inside, span["end"]]
    gaps = [b - a for a, b in zip(points, points[1:])]
    return span["end"] - span["start"], max(gaps)


def assert_releases_gil(make_call, batch):
    """make_call(batch) -> a zero-argument kernel call; the batch doubles until one call takes
    long enough (0.2 s) to tell, so a faster kernel keeps the test meaningful."""
    while True:
        kernel = make_call(batch)
        start = time.perf_counter()
        kernel()
        if time.perf_counter() - start > 0.2 or batch >= 4096:
            break
        batch *= 2
    duration, stall = largest_stall_during(kernel)
    assert duration > 0.1, "kernel too short to tell"
    # Holding the GIL would stall the counting thread for the whole kernel (stall == duration).
    assert stall < 0.5 * duration, f"stalled {stall:.3f}s of a {duration:.3f}s kernel: GIL held?"


def test_conv2d_releases_the_gil(restore_threads):
    torch.set_num_threads(1)  # leave a core to the counting thread
    w = torch.randn(64, 32, 3, 3)

    def make_call(batch):
        x = torch.randn(batch, 32, 64, 64)
        return lambda: fn.conv2d(x, w, padding=1)

    assert_releases_gil(make_call, batch=8)


@needs_pooling
def test_pooling_releases_the_gil(restore_threads):
    torch.set_num_threads(1)

    def make_call(batch):
        x = torch.randn(batch, 64, 112, 112)
        return lambda: fn.max_pool2d(x, 3, 2, 1, return_indices=True)

    assert_releases_gil(make_call, batch=8)

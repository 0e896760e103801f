"""The weight cache (csrc/cpu/weight_cache.h): with grad mode off in the kernel a conv reuses
the packed form of an unchanged weight, gives bit-identical results to a packing per call, sees
in-place updates and swapped storage, repacks in place after optimizer steps, and drops the
entries of weights that died."""
import gc
import threading

import pytest
import torch

import cnnext

cpu = cnnext.backends.cpu
F = cnnext.functional
# (algorithm, input size, weight size, padding): rows whose forward caches its packing.
CASES = [
    ("winograd", (2, 16, 20, 20), (24, 16, 3, 3), 1),
    ("im2col", (2, 8, 13, 11), (12, 8, 3, 3), 1),  # on channels_last inputs: im2col_nhwc
]


def _input(algo, size, dtype=torch.float32):
    x = torch.randn(size, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last) if algo == "im2col" else x


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.delenv("CNNEXT_CONV_ALGO", raising=False)
    cpu.weight_cache_clear()
    yield
    cpu.weight_cache_clear()


@pytest.mark.parametrize("algo,xs,ws,pad", CASES, ids=[c[0] for c in CASES])
def test_hits_are_bit_identical_to_packing_each_call(monkeypatch, algo, xs, ws, pad):
    monkeypatch.setenv("CNNEXT_CONV_ALGO", algo)
    x, w, b = _input(algo, xs), torch.randn(ws), torch.randn(ws[0])
    with torch.enable_grad():  # grad mode on in the kernel: the cache is not used
        reference = F.conv2d(x, w, b, padding=pad)
    assert cpu.weight_cache_stats()["entries"] == 0
    with torch.no_grad():
        first = F.conv2d(x, w, b, padding=pad)
        again = F.conv2d(x, w, b, padding=pad)
    stats = cpu.weight_cache_stats()
    assert stats["misses"] == 1 and stats["hits"] == 1 and stats["entries"] == 1
    assert torch.equal(first, reference) and torch.equal(again, reference)
    with torch.inference_mode():
        assert torch.equal(F.conv2d(x, w, b, padding=pad), reference)
    assert cpu.weight_cache_stats()["hits"] == 2


@pytest.mark.parametrize("algo,xs,ws,pad", CASES, ids=[c[0] for c in CASES])
def test_changed_weights_are_repacked(monkeypatch, algo, xs, ws, pad):
    monkeypatch.setenv("CNNEXT_CONV_ALGO", algo)
    x, w = _input(algo, xs), torch.randn(ws)

    def uncached():  # grad mode on in the kernel: packed on the spot
        with torch.enable_grad():
            return F.conv2d(x, w.detach(), None, padding=pad)

    with torch.no_grad():
        F.conv2d(x, w, None, padding=pad)
        w.mul_(-2.0)  # in place: the version counter moves
        assert torch.equal(F.conv2d(x, w, None, padding=pad), uncached())
        w.data = torch.randn(ws)  # new storage under the same tensor
        assert torch.equal(F.conv2d(x, w, None, padding=pad), uncached())
        w.data.add_(1.0)  # through .data: no version counter moves, the bytes do
        assert torch.equal(F.conv2d(x, w, None, padding=pad), uncached())
    assert cpu.weight_cache_stats()["misses"] == 4


def test_training_steps_repack_in_place_and_eval_hits(monkeypatch):
    """A training step's forward runs with grad mode off in the kernel (autograd's rule for
    custom ops), so it packs through the cache: each optimizer step changes the weight's
    version, the next forward misses and repacks into the same entry."""
    monkeypatch.setenv("CNNEXT_CONV_ALGO", "winograd")
    conv = cnnext.Conv2d(16, 24, 3, padding=1)
    reference = torch.nn.Conv2d(16, 24, 3, padding=1)
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(2, 16, 12, 12)
    opt = torch.optim.SGD(conv.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    for step in range(3):
        for m, o in ((conv, opt), (reference, ref_opt)):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
        stats = cpu.weight_cache_stats()
        assert stats["entries"] == 1 and stats["misses"] == step + 1 and stats["hits"] == 0
    with torch.no_grad():
        for _ in range(3):
            torch.testing.assert_close(conv(x), reference(x), rtol=1e-4, atol=1e-4)
    assert cpu.weight_cache_stats()["hits"] == 2


def test_entries_of_dead_weights_are_dropped(monkeypatch):
    monkeypatch.setenv("CNNEXT_CONV_ALGO", "winograd")
    x = torch.randn(1, 16, 12, 12)
    with torch.no_grad():
        for _ in range(20):
            F.conv2d(x, torch.randn(16, 16, 3, 3), None, padding=1)
            gc.collect()
    # Each insertion drops the entries of weights that died before it.
    assert cpu.weight_cache_stats()["entries"] <= 2


def test_concurrent_inference_threads_agree(monkeypatch):
    monkeypatch.setenv("CNNEXT_CONV_ALGO", "winograd")
    x, w = torch.randn(2, 16, 20, 20), torch.randn(24, 16, 3, 3)
    expected = F.conv2d(x, w, None, padding=1).detach()
    errors = []

    def work():
        try:
            with torch.no_grad():
                for _ in range(10):
                    if not torch.equal(F.conv2d(x, w, None, padding=1), expected):
                        errors.append("mismatch")
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(repr(e))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_weight_copy_is_kept_and_follows_changes(dtype):
    """A channels_last weight (a model converted to channels_last) is copied to OIHW once and
    kept: later calls hit, results equal a call with the same weight in OIHW, and every kind of
    change (in place, new storage, through .data) is seen."""
    x = torch.randn(2, 24, 9, 9, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(16, 24, 3, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)

    def check():
        with torch.enable_grad():  # grad mode on in the kernel: no cache, a copy per call
            reference = F.conv2d(x, w.detach().contiguous(), None, padding=1)
        assert torch.equal(F.conv2d(x, w, None, padding=1), reference)

    with torch.no_grad():
        check()
        hits = cpu.weight_cache_stats()["hits"]
        check()
        assert cpu.weight_cache_stats()["hits"] > hits  # the copy (and any packing) reused
        w.mul_(-2.0)
        check()
        w.data = torch.randn(16, 24, 3, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
        check()
        w.data.add_(1.0)
        check()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last],
                         ids=["oihw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_float_weight_conversion_is_kept(dtype, layout):
    """float16 (and bfloat16 where no AVX512-BF16 kernel serves) runs the float32 kernels on a
    float32 copy of the weight: without gradients the copy is made once and reused while the
    weight's bytes stay the same, and every kind of change is seen."""
    x = torch.randn(2, 24, 9, 9, dtype=dtype).contiguous(memory_format=layout)
    w = torch.randn(16, 24, 3, 3, dtype=dtype).contiguous(memory_format=layout)
    b = torch.randn(16, dtype=dtype)

    def check():
        with torch.enable_grad():  # grad mode on in the kernel: no cache, a conversion per call
            reference = F.conv2d(x, w.detach(), b, padding=1)
        out = F.conv2d(x, w, b, padding=1)
        assert torch.equal(out, reference)
        expected = torch.nn.functional.conv2d(x.float(), w.float(), b.float(), padding=1)
        torch.testing.assert_close(out.float(), expected, rtol=1e-2, atol=5e-2)

    with torch.no_grad():
        check()
        hits = cpu.weight_cache_stats()["hits"]
        check()
        assert cpu.weight_cache_stats()["hits"] > hits
        w.mul_(-2.0)
        check()
        w.data = torch.randn(16, 24, 3, 3, dtype=dtype).contiguous(memory_format=layout)
        check()
        w.data.add_(1.0)
        check()

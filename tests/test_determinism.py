"""Determinism (csrc/cpu/conv2d.cpp and gemm.cpp promise it): the same inputs and thread count
give bit-identical outputs and grads run after run. Across thread counts, the output, grad_input
and grad_bias are still bit-identical (every element is summed in the same order whatever the
split); grad_weight is summed as per-thread partials over contiguous image ranges, added in range
order, so its rounding depends on the thread count: there it must agree to float32 rounding."""
import pytest
import torch

import cnnext

CF = cnnext.functional.conv2d

CONFIGS = [
    # batch >= threads: images in parallel; batch 1: parallelism inside im2col/GEMM/col2im.
    dict(shape=(4, 16, 15, 13), weight=(24, 8, 3, 3), stride=1, padding=1, groups=2),
    dict(shape=(1, 32, 21, 19), weight=(80, 32, 3, 3), stride=(2, 1), padding=2, groups=1),
    dict(shape=(3, 12, 11, 11), weight=(12, 1, 5, 5), stride=1, padding="same", groups=12),
    dict(shape=(2, 300, 7, 7), weight=(70, 300, 1, 1), stride=1, padding=0, groups=1),  # > a K block
]


def _run(cfg, threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(7)
        x = torch.randn(cfg["shape"], generator=gen).requires_grad_()
        w = torch.randn(cfg["weight"], generator=gen).requires_grad_()
        b = torch.randn(cfg["weight"][0], generator=gen).requires_grad_()
        out = CF(x, w, b, stride=cfg["stride"], padding=cfg["padding"], groups=cfg["groups"])
        out.backward(torch.randn(out.shape, generator=gen))
        return [out.detach(), x.grad, w.grad, b.grad]
    finally:
        torch.set_num_threads(previous)


def _assert_bitwise_equal(a, b):
    for name, s, t in zip(("output", "grad_input", "grad_weight", "grad_bias"), a, b):
        assert torch.equal(s, t), f"{name} differs bitwise ({(s - t).abs().max().item():.3g})"


@pytest.mark.parametrize("cfg", CONFIGS)
def test_twice_bit_identical(cfg):
    threads = max(2, torch.get_num_threads())
    _assert_bitwise_equal(_run(cfg, threads), _run(cfg, threads))


@pytest.mark.parametrize("cfg", CONFIGS)
def test_one_and_two_threads_bit_identical(cfg):
    one, two = _run(cfg, 1), _run(cfg, 2)
    for name, s, t in zip(("output", "grad_input", "grad_bias"), one[:2] + one[3:], two[:2] + two[3:]):
        assert torch.equal(s, t), f"{name} differs bitwise ({(s - t).abs().max().item():.3g})"
    # grad_weight: per-thread partial sums, so only float32 rounding of the sum may differ
    # (relative to the largest entry: an entry near zero may come from cancelling terms).
    scale = one[2].abs().max().item()
    torch.testing.assert_close(one[2], two[2], rtol=1e-5, atol=1e-5 * scale)

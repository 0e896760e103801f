"""Determinism (csrc/cpu/conv2d.cpp and gemm.cpp promise it): the same inputs give bit-identical
outputs and grads run after run, and for 1 and 2 threads (images and GEMM tiles are divided
among threads, but every output element is summed in the same order whatever the split)."""
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
    _assert_bitwise_equal(_run(cfg, 1), _run(cfg, 2))

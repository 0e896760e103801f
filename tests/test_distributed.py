"""Distributed training of a converted model: DistributedDataParallel on gloo in 2 CPU processes
gets the parameters single-process training on the combined batch gets; activation
checkpointing of a converted block gives the same gradients."""
import os
import socket
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

import cnnext
from test_models import LeNet, TinyResNet

WORLD = 2
STEPS = 3
TIMEOUT_S = 120


def _data():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(8, 1, 28, 28, dtype=torch.float64, generator=generator)
    y = torch.randn(8, 10, dtype=torch.float64, generator=generator)
    return x, y


def _model():
    torch.manual_seed(2)
    return cnnext.convert(LeNet().double())  # convert first, then wrap


def _train(model, x, y):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(STEPS):
        optimizer.zero_grad()
        F.mse_loss(model(x), y).backward()  # a mean: DDP's averaged gradients match it
        optimizer.step()


def _worker(rank, port, out_path):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
        timeout=timedelta(seconds=TIMEOUT_S // 2),
    )
    try:
        model = torch.nn.parallel.DistributedDataParallel(_model())
        x, y = _data()
        _train(model, x.chunk(WORLD)[rank], y.chunk(WORLD)[rank])
        if rank == 0:
            torch.save(model.module.state_dict(), out_path)
        # Both ranks leave together: a rank tearing gloo down while the other still runs
        # aborted once in CI ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gloo_two_processes_matches_single_process(tmp_path):
    out_path = str(tmp_path / "ddp_state.pt")
    context = mp.spawn(_worker, args=(_free_port(), out_path), nprocs=WORLD, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1):  # re-raises a worker's exception
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"DDP workers did not finish within {TIMEOUT_S} s")
    ddp_state = torch.load(out_path)

    single = _model()
    x, y = _data()
    initial = {k: v.clone() for k, v in single.state_dict().items()}
    _train(single, x, y)
    for key, value in single.state_dict().items():
        assert not torch.equal(value, initial[key])  # training moved every parameter
        torch.testing.assert_close(ddp_state[key], value, rtol=1e-12, atol=1e-12)


def test_activation_checkpointing_gives_identical_gradients():
    model = cnnext.convert(TinyResNet().double())
    x = torch.randn(2, 3, 24, 24, dtype=torch.float64)

    def run(use_checkpoint):
        model.zero_grad()
        stem = model.stem(x)
        if use_checkpoint:
            features = checkpoint(model.blocks, stem, use_reentrant=False)
        else:
            features = model.blocks(stem)
        out = model.fc(torch.flatten(model.pool(features), 1))
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    plain_out, plain_grads = run(False)
    ckpt_out, ckpt_grads = run(True)
    assert torch.equal(ckpt_out, plain_out)
    for got, want in zip(ckpt_grads, plain_grads):
        assert torch.equal(got, want)

"""torch.export of converted models: cnnext.decompositions() lowers every cnnext operator to
aten operators with the same outputs; without lowering the cnnext operators are kept by name
and a saved program loads again where cnnext is imported."""
import pytest
import torch
from torch import nn

import cnnext
from conftest import assert_close
from test_models import LeNet, TinyResNet

ops = torch.ops.cnnext


class Pools(nn.Module):
    """Every pooling operator with its less common arguments."""

    def forward(self, x):
        a, indices = nn.functional.max_pool2d(x, 3, 2, 1, dilation=2, ceil_mode=True,
                                              return_indices=True)
        b = nn.functional.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
        c = nn.functional.avg_pool2d(x, 2, divisor_override=3)
        d = nn.functional.adaptive_avg_pool2d(x, (3, 5))
        e, e_indices = nn.functional.adaptive_max_pool2d(x, (4, 3), return_indices=True)
        return a, indices, b, c, d, e, e_indices


class PoolsModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.max = nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True, return_indices=True)
        self.avg = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
        self.avg_div = nn.AvgPool2d(2, divisor_override=3)
        self.adaptive_avg = nn.AdaptiveAvgPool2d((3, 5))
        self.adaptive_max = nn.AdaptiveMaxPool2d((4, 3), return_indices=True)

    def forward(self, x):
        return (*self.max(x), self.avg(x), self.avg_div(x), self.adaptive_avg(x),
                *self.adaptive_max(x))


def _call_targets(program):
    return {n.target for n in program.graph.nodes if n.op == "call_function"}


def _cnnext_ops(program):
    return {t for t in _call_targets(program) if getattr(t, "namespace", None) == "cnnext"}


def test_decompositions_cover_every_operator():
    names = {op.name() for op in cnnext.decompositions()}
    # Every operator in csrc/ops.cpp but the private introspection ones (sizes in, no tensors).
    public = {f"cnnext::{name}" for name in ops if not name.startswith("_")}
    assert names == public


@pytest.mark.parametrize("make,shape", [(TinyResNet, (2, 3, 24, 24)), (LeNet, (2, 1, 28, 28)),
                                        (PoolsModule, (2, 3, 13, 11))],
                         ids=["tiny_resnet", "lenet", "pools"])
def test_export_lowers_to_aten(make, shape):
    model = make().eval()
    converted = cnnext.convert(model)
    x = torch.randn(shape)
    program = torch.export.export(converted, (x,))
    assert _cnnext_ops(program)  # unlowered: the cnnext operators by name
    lowered = program.run_decompositions(cnnext.decompositions())
    assert not _cnnext_ops(lowered)
    assert all(str(t).startswith("aten.") or t.__module__ == "_operator"
               for t in _call_targets(lowered))
    for got, want in zip(torch.utils._pytree.tree_leaves(lowered.module()(x)),
                         torch.utils._pytree.tree_leaves(model(x))):
        assert got.dtype == want.dtype
        assert_close(got, want) if got.is_floating_point() else torch.equal(got, want)


def test_decomposed_backward_operators_match():
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    go = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    table = cnnext.decompositions()
    args = (go, x, w, [2, 2], [1, 1], [1, 1], 1, [True, True, False])
    for got, want in zip(table[ops.conv2d_backward.default](*args), ops.conv2d_backward(*args)):
        assert got.shape == want.shape
        assert_close(got, want)
    out, indices = ops.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], True)
    pool_args = (torch.randn_like(out), x, indices, [3, 3], [2, 2], [1, 1], [1, 1], True)
    assert_close(table[ops.max_pool2d_backward.default](*pool_args),
                 ops.max_pool2d_backward(*pool_args))
    avg_args = (torch.randn_like(out), x, [3, 3], [2, 2], [1, 1], True, False, None)
    assert_close(table[ops.avg_pool2d_backward.default](*avg_args),
                 ops.avg_pool2d_backward(*avg_args))
    a, b = torch.randn(5, 7, dtype=torch.float64), torch.randn(6, 7, dtype=torch.float64)
    c = torch.randn(5, 6, dtype=torch.float64)
    gemm_args = (a, b, False, True, 0.5, 2.0, c, "auto")
    assert_close(table[ops.gemm.default](*gemm_args), ops.gemm(*gemm_args))


def test_export_training_graph_lowers():
    # A training step's backward operators lower too (aot_export of forward + backward).
    model = cnnext.convert(TinyResNet().double())
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)

    def step(x):
        return torch.autograd.grad(model(x).sum(), [model.stem[0].weight], create_graph=False)[0]

    gm = torch.fx.experimental.proxy_tensor.make_fx(step, decomposition_table=cnnext.decompositions())(x)
    assert not any(getattr(n.target, "namespace", None) == "cnnext" for n in gm.graph.nodes)
    assert_close(gm(x), step(x))


def test_fused_relu_lowers():
    model = TinyResNet().eval()
    fused = cnnext.convert(model, fuse=True)
    x = torch.randn(2, 3, 24, 24)
    lowered = torch.export.export(fused, (x,)).run_decompositions(cnnext.decompositions())
    assert not _cnnext_ops(lowered)
    assert_close(lowered.module()(x), model(x))


def test_saved_program_keeps_operators_and_loads(tmp_path):
    model = cnnext.convert(LeNet()).eval()
    x = torch.randn(3, 1, 28, 28)
    path = tmp_path / "lenet.pt2"
    torch.export.save(torch.export.export(model, (x,)), path)
    loaded = torch.export.load(path)  # cnnext is imported: its operators resolve
    assert _cnnext_ops(loaded)
    assert_close(loaded.module()(x), model(x))

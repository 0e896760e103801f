"""ONNX export of converted models with cnnext.onnx_translation_table(): the exported model,
run in onnxruntime, gives the torch model's outputs (max pooling indices included); what ONNX
cannot express fails with an error naming the operator."""
import numpy as np
import pytest
import torch
from torch import nn

import cnnext
from test_models import TinyResNet

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


class OnnxPools(nn.Module):
    def __init__(self, adaptive_max=(4, 2)):
        super().__init__()
        self.max = nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True, return_indices=True)
        self.max_plain = nn.MaxPool2d((2, 3), (2, 1), (1, 0))
        self.avg = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
        self.avg_pad = nn.AvgPool2d(3, 2, 1, ceil_mode=True)
        self.avg_div = nn.AvgPool2d(3, 2, 1, divisor_override=5)
        self.adaptive_avg = nn.AdaptiveAvgPool2d((3, 5))
        self.adaptive_max = nn.AdaptiveMaxPool2d(adaptive_max, return_indices=True)

    def forward(self, x):
        return (*self.max(x), self.max_plain(x), self.avg(x), self.avg_pad(x), self.avg_div(x),
                self.adaptive_avg(x), *self.adaptive_max(x))


def _export(model, x):
    return torch.onnx.export(model, (x,), dynamo=True, verbose=False,
                             custom_translation_table=cnnext.onnx_translation_table())


def _run_onnx(program, x):
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def _onnx_ops(program):
    return {node.op_type for node in program.model_proto.graph.node}


@pytest.mark.parametrize("make,shape,expected_ops", [
    (TinyResNet, (2, 3, 24, 24), {"Conv", "MaxPool", "GlobalAveragePool"}),
    (OnnxPools, (2, 3, 12, 10), {"MaxPool", "AveragePool"}),
], ids=["tiny_resnet", "pools"])
def test_onnxruntime_matches_torch(make, shape, expected_ops):
    model = make().eval()
    x = torch.randn(shape)
    program = _export(cnnext.convert(model), x)
    assert expected_ops <= _onnx_ops(program)
    expected = model(x)
    expected = expected if isinstance(expected, tuple) else (expected,)
    outputs = _run_onnx(program, x)
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        want = want.detach().numpy()
        assert got.shape == want.shape and got.dtype == want.dtype
        if want.dtype == np.int64:
            np.testing.assert_array_equal(got, want)  # indices: flat h * W + w per plane
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_fused_model_exports_conv_relu():
    model = TinyResNet().eval()
    x = torch.randn(2, 3, 24, 24)
    program = _export(cnnext.convert(model, fuse=True), x)
    assert "BatchNormalization" not in _onnx_ops(program) and "Relu" in _onnx_ops(program)
    np.testing.assert_allclose(_run_onnx(program, x)[0], model(x).detach().numpy(),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("module,message", [
    (nn.AdaptiveAvgPool2d((5, 3)), "multiple of output_size"),
    (nn.AdaptiveMaxPool2d((5, 3)), "multiple of output_size"),
    (nn.AvgPool2d(3, 2, ceil_mode=True, divisor_override=2), "divisor_override"),
], ids=["adaptive_avg", "adaptive_max", "avg_divisor_ceil"])
def test_inexpressible_pooling_raises(module, message):
    with pytest.raises(Exception, match=message):
        _export(cnnext.convert(module).eval(), torch.randn(1, 2, 12, 10))

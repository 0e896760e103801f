"""unconvert(): the inverse of convert(): torch.nn classes back, same parameters, buffers,
hooks, training mode and state_dict; fused convs become torch's ConvReLU2d."""
import torch
from torch import nn

import cnnext
from conftest import assert_close
from test_models import LeNet, TinyResNet


def test_unconvert_inverts_convert():
    model = TinyResNet()
    calls = []
    model.stem[0].register_forward_hook(lambda m, i, o: calls.append(type(m)))
    converted = cnnext.convert(model)
    back = cnnext.unconvert(converted)
    assert [type(m) for m in back.modules()] == [type(m) for m in model.modules()]
    assert back.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)
    x = torch.randn(2, 3, 24, 24)
    assert_close(back(x), model(x))
    assert calls == [nn.Conv2d, nn.Conv2d]  # the hook came along
    # converted is untouched (inplace=False copies).
    assert type(converted.stem[0]) is cnnext.Conv2d


def test_unconvert_inplace_keeps_parameter_objects():
    model = cnnext.convert(LeNet()).eval()
    params = [id(p) for p in model.parameters()]
    same = cnnext.unconvert(model, inplace=True)
    assert same is model and not model.training
    assert [id(p) for p in model.parameters()] == params
    assert not any(type(m).__module__.startswith("cnnext") for m in model.modules())


def test_unconvert_fused_model():
    model = TinyResNet().eval()
    fused = cnnext.convert(model, fuse=True)
    back = cnnext.unconvert(fused)
    kinds = {type(m) for m in back.modules()}
    assert torch.ao.nn.intrinsic.ConvReLU2d in kinds
    assert not any(t.__module__.startswith("cnnext") for t in kinds)
    x = torch.randn(2, 3, 24, 24)
    assert_close(back(x), model(x))

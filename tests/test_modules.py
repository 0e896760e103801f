"""cnnext.Conv2d as a drop-in for torch.nn.Conv2d, and convert() on whole models."""
import copy

import pytest
import torch
import torch.nn as nn

import cnnext
from conftest import assert_close

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")


def _pair_of_convs(*args, **kwargs):
    """A torch.nn.Conv2d and a cnnext.Conv2d with the same parameters."""
    ref = nn.Conv2d(*args, **kwargs)
    ours = cnnext.Conv2d(*args, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ours, ref


def _check_same(ours, ref, x):
    xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, expected = ours(xo), ref(xr)
    assert_close(out, expected)
    g = torch.randn_like(expected)
    out.backward(g)
    expected.backward(g)
    assert_close(xo.grad, xr.grad)
    for (name, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        assert_close(p.grad, q.grad, msg=lambda m, name=name: f"grad of {name}: {m}")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(in_channels=3, out_channels=5, kernel_size=3),
        dict(in_channels=4, out_channels=6, kernel_size=(2, 3), stride=(2, 1), padding=(1, 0),
             dilation=(1, 2), groups=2, bias=False),
        dict(in_channels=4, out_channels=8, kernel_size=3, padding="same", groups=4),
        dict(in_channels=2, out_channels=3, kernel_size=1, padding="valid"),
    ],
)
def test_state_dict_round_trip_and_repr(kwargs):
    ref = nn.Conv2d(**kwargs)
    ours = cnnext.Conv2d(**kwargs)
    assert repr(ours) == repr(ref)
    assert isinstance(ours, nn.Conv2d)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())  # torch -> cnnext
    for key, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value)
    back = nn.Conv2d(**kwargs)
    back.load_state_dict(ours.state_dict())  # cnnext -> torch
    x = torch.randn(2, kwargs["in_channels"], 7, 6)
    assert_close(ours(x), back(x))
    assert_close(ours(x), ref(x))


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=(3, 2), padding=(2, 1), stride=(1, 2), dilation=(1, 2)),
        dict(kernel_size=4, padding="same", dilation=(2, 1)),  # asymmetric 'same'
        dict(kernel_size=(1, 3), padding="valid"),
    ],
)
def test_every_padding_mode_matches_torch(padding_mode, kwargs):
    ours, ref = _pair_of_convs(4, 6, groups=2, padding_mode=padding_mode, **kwargs)
    torch.manual_seed(1)
    for shape in ((2, 4, 9, 8), (4, 7, 9)):  # batched and batch-less
        _check_same(ours, ref, torch.randn(shape, dtype=torch.float64).float())
        ours.zero_grad()
        ref.zero_grad()


def test_module_dtype_and_device_moves():
    ours, ref = _pair_of_convs(3, 4, 3, padding=1)
    ours, ref = ours.double(), ref.double()
    _check_same(ours, ref, torch.randn(2, 3, 6, 6, dtype=torch.float64))
    x = torch.randn(1, 3, 6, 6).to(memory_format=torch.channels_last).double()
    _check_same(ours.to(memory_format=torch.channels_last), ref, x)


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, 10),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def _convs(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_convert_lenet_same_outputs_and_grads():
    model = LeNet()
    converted = cnnext.convert(model)
    assert all(type(m) is cnnext.Conv2d for m in _convs(converted))
    assert all(type(m) is nn.Conv2d for m in _convs(model)), "inplace=False changed the original"
    x = torch.randn(4, 1, 28, 28)
    out, expected = converted(x), model(x)
    assert_close(out, expected)
    target = torch.randint(0, 10, (4,))
    nn.functional.cross_entropy(out, target).backward()
    nn.functional.cross_entropy(expected, target).backward()
    for (name, p), (_, q) in zip(converted.named_parameters(), model.named_parameters()):
        assert_close(p.grad, q.grad, msg=lambda m, name=name: f"grad of {name}: {m}")


def test_convert_copy_leaves_original_untouched():
    model = LeNet()
    before = copy.deepcopy(model.state_dict())
    converted = cnnext.convert(model, inplace=False)
    assert converted is not model
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    # The copy's parameters are its own: training it does not move the original.
    with torch.no_grad():
        _convs(converted)[0].weight.add_(1.0)
    assert torch.equal(_convs(model)[0].weight, before["features.0.weight"])


def test_convert_inplace_swaps_the_same_objects():
    model = LeNet()
    convs = _convs(model)
    weights = [c.weight for c in convs]
    result = cnnext.convert(model, inplace=True)
    assert result is model
    assert [id(c) for c in _convs(model)] == [id(c) for c in convs]
    assert all(type(c) is cnnext.Conv2d for c in convs)
    assert all(c.weight is w for c, w in zip(convs, weights))


def test_convert_keeps_training_mode_and_hooks():
    model = LeNet()
    model.features[0].eval()  # mixed modes must survive
    calls = []
    model.features[3].register_forward_hook(lambda module, inp, out: calls.append(type(module)))
    model.features[3].register_forward_pre_hook(lambda module, inp: calls.append("pre"))
    converted = cnnext.convert(model)
    assert converted.training and not converted.features[0].training
    assert converted.features[3].training
    converted(torch.randn(1, 1, 28, 28))
    assert calls == ["pre", cnnext.Conv2d]


def test_convert_leaves_subclasses_and_other_layers_alone():
    class MyConv(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(MyConv(1, 2, 3), nn.Conv2d(2, 2, 1), nn.ConvTranspose2d(2, 2, 3))
            self.unused = nn.Conv1d(2, 2, 1)

        def forward(self, x):
            return self.body(x)

    model = Model()
    converted = cnnext.convert(model)
    assert [type(m) for m in converted.body] == [MyConv, cnnext.Conv2d, nn.ConvTranspose2d]
    assert type(converted.unused) is nn.Conv1d
    x = torch.randn(1, 1, 6, 6)
    assert_close(converted(x), model(x))


def test_convert_a_bare_conv_and_a_converted_model():
    conv = nn.Conv2d(2, 3, 3)
    converted = cnnext.convert(conv)
    assert type(converted) is cnnext.Conv2d and type(conv) is nn.Conv2d
    again = cnnext.convert(converted)  # idempotent
    assert type(again) is cnnext.Conv2d
    x = torch.randn(1, 2, 5, 5)
    assert_close(again(x), conv(x))


def test_module_pickles_and_deep_copies():
    import io

    conv = cnnext.Conv2d(2, 3, 3, padding_mode="reflect", padding=1)
    buffer = io.BytesIO()
    torch.save(conv, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    x = torch.randn(1, 2, 5, 5)
    assert type(loaded) is cnnext.Conv2d
    assert_close(loaded(x), conv(x))
    assert_close(copy.deepcopy(conv)(x), conv(x))

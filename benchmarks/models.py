"""Whole models, as torch modules (no torchvision) and as cnnext.convert(model) with the same
weights: inference batch latency and one training step (forward, backward, SGD step)."""
import copy
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

import cnnext

from .suite import Case, Row


def lenet(activation=nn.Sigmoid):
    """D2L's LeNet-5 for 1x28x28 inputs."""
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), activation(), nn.AvgPool2d(2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), activation(), nn.AvgPool2d(2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), activation(),
        nn.Linear(120, 84), activation(),
        nn.Linear(84, 10),
    )


def cifar_net():
    """The PyTorch-tutorial CIFAR-10 net (3x32x32), with ReLU and max pooling."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    )


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


def resnet18(num_classes=1000):
    """ResNet-18: 7x7/2 stem, 3x3/2 max pool, basic blocks [2, 2, 2, 2], global average pool."""
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
              nn.MaxPool2d(3, 2, 1)]
    c_in = 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: object
    batch: int
    input_shape: tuple
    quick_batch: int = 0  # the batch --quick uses (0: same as batch)

    def shape(self, batch):
        c, h, w = self.input_shape
        return f"{batch}x{c}x{h}x{w}"


MODELS = [
    ModelSpec("lenet", lenet, 64, (1, 28, 28)),
    ModelSpec("cifar_net", cifar_net, 64, (3, 32, 32)),
    ModelSpec("resnet18", resnet18, 8, (3, 224, 224), quick_batch=2),
]


def _conv_flops(model, x):
    """Forward FLOPs of the convolutions and linears (2 per multiply-add), from one traced run."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += 2 * output.numel() * module.in_channels // module.groups * module.weight[0, 0].numel()
        elif isinstance(module, nn.Linear):
            total += 2 * output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return total


def model_case(spec: ModelSpec, batch, training: bool, device, dtype):
    torch.manual_seed(0)
    theirs = spec.build().to(device, dtype)
    ours = cnnext.convert(theirs)  # a deep copy: same weights, its own parameters
    x = torch.randn(batch, *spec.input_shape, device=device, dtype=dtype)
    # float64 twins of both models for the correctness gate (see suite.Case.exact).
    exact_theirs = copy.deepcopy(theirs).double() if dtype != torch.float64 else None
    exact_ours = cnnext.convert(exact_theirs) if exact_theirs is not None else None
    if not training:
        theirs.eval(), ours.eval()
        exact = None
        if exact_theirs is not None:
            exact_theirs.eval(), exact_ours.eval()
            exact = lambda: (exact_theirs(x.double()), exact_ours(x.double()))
        return Case(torch=lambda: theirs(x), cnnext=lambda: ours(x), grad_enabled=False, exact=exact)

    labels = torch.randint(0, 10, (batch,), device=device)
    theirs.train(), ours.train()

    def step(model, optimizer, inputs=x):
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(inputs), labels)
        loss.backward()
        optimizer.step()
        return (loss.detach(), *[p.grad for p in model.parameters()])

    # A small learning rate keeps the weights (and their timings) stable over many steps.
    sgd = partial(torch.optim.SGD, lr=1e-4, momentum=0.9)
    exact = None
    if exact_theirs is not None:
        exact_theirs.train(), exact_ours.train()
        exact = lambda: (step(exact_theirs, sgd(exact_theirs.parameters()), x.double()),
                         step(exact_ours, sgd(exact_ours.parameters()), x.double()))
    return Case(torch=partial(step, theirs, sgd(theirs.parameters())),
                cnnext=partial(step, ours, sgd(ours.parameters())), exact=exact)


def model_rows(quick):
    rows = []
    for spec in MODELS:
        batch = spec.quick_batch if quick and spec.quick_batch else spec.batch
        for training in (False, True):
            rows.append(Row(
                section="model", name=spec.name, pass_="train step" if training else "inference",
                shape=spec.shape(batch), quick=True,
                make=partial(model_case, spec, batch, training), spec=spec,
                flops_fn=partial(_model_flops, spec, batch, training)))
    return rows


def _model_flops(spec, batch, training, device, dtype):
    torch.manual_seed(0)
    model = spec.build().to(device, dtype).eval()
    forward = _conv_flops(model, torch.randn(batch, *spec.input_shape, device=device, dtype=dtype))
    return forward * (3 if training else 1)

"""Whole models, as torch modules (no torchvision) and as cnnext.convert(model) with the same
weights: inference batch latency and one training step (forward, backward, SGD step), in
each configuration (dtype x layout) for the published architectures, in the run's dtype for
the two small classics."""
import copy
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

import cnnext

from .architectures import ARCHITECTURES
from .configs import CONFIGS
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


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: object
    batch: int  # inference batch
    input_shape: tuple
    quick_batch: int = 0  # the batch --quick uses (0: not in --quick)
    train_batch: int = 0  # the training step's batch (0: same as batch)
    configs: bool = True  # timed in every configuration; False: the run's dtype, NCHW

    def shape(self, batch):
        c, h, w = self.input_shape
        return f"{batch}x{c}x{h}x{w}"


def _published(name, batch=8, quick_batch=0, train_batch=0):
    build, size = ARCHITECTURES[name]
    return ModelSpec(name, build, batch, (3, size, size), quick_batch, train_batch)


MODELS = [
    ModelSpec("lenet", lenet, 64, (1, 28, 28), configs=False),
    ModelSpec("cifar_net", cifar_net, 64, (3, 32, 32), configs=False),
    _published("resnet18", quick_batch=2),
    _published("resnet50", train_batch=4),
    _published("mobilenet_v2"),
    _published("mobilenet_v3_small", quick_batch=1),
    _published("efficientnet_b0", train_batch=4),
    _published("convnext_tiny", train_batch=4),
    _published("inception_v3", train_batch=4),
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


# Inference rows also timed with cnnext.convert(model, fuse=True) (BatchNorm folded into the
# conv before it, ReLU in the conv's epilogue), against the same plain torch model.
FUSED_MODELS = ("resnet50", "mobilenet_v2")


def model_case(spec: ModelSpec, batch, training: bool, device, dtype, config=None, fuse=False):
    """config: a configs.LayoutConfig (model and input in its dtype and layout), or None for
    the run's dtype in NCHW. fuse: the cnnext side is convert(model.eval(), fuse=True)."""
    torch.manual_seed(0)
    memory_format = config.memory_format if config else torch.contiguous_format
    dtype = config.dtype if config else dtype
    theirs = spec.build().to(device, dtype, memory_format=memory_format)
    if fuse:
        theirs.eval()
    # A deep copy: same weights, its own parameters.
    ours = cnnext.convert(theirs, fuse=True) if fuse else cnnext.convert(theirs)
    x = torch.randn(batch, *spec.input_shape).to(device, dtype, memory_format=memory_format)
    # float64 twins of both models for the correctness gate (see suite.Case.exact).
    exact_theirs = copy.deepcopy(theirs).double() if dtype != torch.float64 else None
    exact_ours = None
    if exact_theirs is not None:
        exact_ours = cnnext.convert(exact_theirs, fuse=True) if fuse else cnnext.convert(exact_theirs)
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
        torch.manual_seed(0)  # the same dropout masks on both sides
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


def model_rows(quick, config_keys=()):
    """--quick: the models with a quick_batch, at that batch. Published architectures get a
    row per configuration in config_keys; the classics one row in the run's dtype (--full)."""
    rows = []
    for spec in MODELS:
        if quick and not spec.quick_batch:
            continue
        for key in (config_keys if spec.configs else (None,)):
            config = CONFIGS[key] if key else None
            for training in (False, True):
                batch = spec.quick_batch if quick else (spec.train_batch or spec.batch) if training else spec.batch
                rows.append(Row(
                    section="model", name=spec.name, pass_="train step" if training else "inference",
                    shape=spec.shape(batch), quick=True, config=key,
                    dtype_override=config.dtype if config else None,
                    make=partial(model_case, spec, batch, training, config=config), spec=spec,
                    flops_fn=partial(_model_flops, spec, batch, training)))
            if spec.name in FUSED_MODELS and not quick:
                rows.append(Row(
                    section="model", name=spec.name, pass_="inference fused",
                    shape=spec.shape(spec.batch), quick=True, config=key,
                    dtype_override=config.dtype if config else None,
                    make=partial(model_case, spec, spec.batch, False, config=config, fuse=True),
                    spec=spec, flops_fn=partial(_model_flops, spec, spec.batch, False)))
    return rows


def _model_flops(spec, batch, training, device=None, dtype=None):
    """Counted once the row is timed, on the meta device (no memory, no arithmetic)."""
    with torch.device("meta"):
        model = spec.build().eval()
        forward = _conv_flops(model, torch.empty(batch, *spec.input_shape))
    return forward * (3 if training else 1)

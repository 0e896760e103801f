"""The layer and pooling suites (issue 4), and the GEMM rows: what each row computes, on both
sides, with the work it does (FLOPs, or the minimum bytes a pooling kernel must move)."""
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

import cnnext

from .suite import Case, Row, Unavailable


@dataclass(frozen=True)
class ConvSpec:
    name: str
    n: int
    c_in: int
    hw: int
    c_out: int
    k: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    dilation: int = 1
    quick: bool = False

    @property
    def out_hw(self):
        return (self.hw + 2 * self.padding - self.dilation * (self.k - 1) - 1) // self.stride + 1

    @property
    def flops(self):
        """Forward multiply-adds x 2; backward (grad input + grad weight) is twice this."""
        return 2 * self.n * self.c_out * self.out_hw**2 * self.c_in // self.groups * self.k**2

    @property
    def shape(self):
        extra = "".join([f" s{self.stride}" if self.stride != 1 else "",
                         f" p{self.padding}" if self.padding else "",
                         f" g{self.groups}" if self.groups != 1 else "",
                         f" d{self.dilation}" if self.dilation != 1 else ""])
        return f"{self.n}x{self.c_in}x{self.hw}² → {self.c_out} k{self.k}{extra}"

    @property
    def activation_bytes_per_element(self):
        return self.n * (self.c_in * self.hw**2 + self.c_out * self.out_hw**2)


# (N, C_in, H=W, C_out, kernel, stride, padding, groups, dilation), as listed in issue 4.
CONV_LAYERS = [
    ConvSpec("lenet_c1", 64, 1, 28, 6, 5, padding=2, quick=True),
    ConvSpec("lenet_c2", 64, 6, 14, 16, 5, quick=True),
    ConvSpec("mnist_c2", 128, 10, 12, 20, 5),
    ConvSpec("cifar_c1", 64, 3, 32, 32, 3, padding=1),
    ConvSpec("cifar_c2", 64, 32, 16, 64, 3, padding=1, quick=True),
    ConvSpec("resnet_stem", 8, 3, 224, 64, 7, stride=2, padding=3, quick=True),
    ConvSpec("resnet_3x3_56", 8, 64, 56, 64, 3, padding=1),
    ConvSpec("resnet_3x3_28", 8, 128, 28, 128, 3, padding=1, quick=True),
    ConvSpec("resnet_3x3_14", 8, 256, 14, 256, 3, padding=1),
    ConvSpec("resnet_3x3_7", 8, 512, 7, 512, 3, padding=1),
    ConvSpec("resnet_3x3_s2", 8, 128, 56, 256, 3, stride=2, padding=1, quick=True),
    ConvSpec("resnet_1x1_56", 8, 256, 56, 64, 1, quick=True),
    ConvSpec("vgg_3x3_112", 4, 128, 112, 128, 3, padding=1),
    ConvSpec("mobilenet_dw_112", 8, 32, 112, 32, 3, padding=1, groups=32, quick=True),
    ConvSpec("mobilenet_dw_s2", 8, 64, 112, 64, 3, stride=2, padding=1, groups=64),
    ConvSpec("dilated_3x3", 8, 64, 56, 64, 3, padding=2, dilation=2),
]


@dataclass(frozen=True)
class PoolSpec:
    name: str
    kind: str  # "max" or "avg"
    n: int
    c: int
    hw: int
    k: int
    stride: int
    padding: int = 0
    ceil_mode: bool = False
    quick: bool = True

    @property
    def out_hw(self):
        span = self.hw + 2 * self.padding - self.k
        out = (-(-span // self.stride) if self.ceil_mode else span // self.stride) + 1
        if self.ceil_mode and (out - 1) * self.stride >= self.hw + self.padding:
            out -= 1  # the last window must start inside the input or left padding
        return out

    @property
    def shape(self):
        extra = (f" p{self.padding}" if self.padding else "") + (" ceil" if self.ceil_mode else "")
        return f"{self.n}x{self.c}x{self.hw}² {self.kind} k{self.k} s{self.stride}{extra} → {self.out_hw}²"

    def min_bytes(self, element_size, backward):
        """Bytes a pooling kernel cannot avoid moving: input read + output written; with the
        backward also grad_output read + grad_input written, and for max pooling the int64
        argmax indices written by the forward and read by the backward."""
        inp = self.n * self.c * self.hw**2 * element_size
        out = self.n * self.c * self.out_hw**2 * element_size
        if not backward:
            return inp + out
        indices = 2 * self.n * self.c * self.out_hw**2 * 8 if self.kind == "max" else 0
        return 2 * (inp + out) + indices


# As listed in issue 4, except the ceil_mode row: 55x55 with k3 s2 gives 27x27 with or without
# ceil_mode, so it uses 56x56 (28 with ceil_mode, 27 without) to exercise the ceil branch.
POOL_LAYERS = [
    PoolSpec("lenet_avg", "avg", 64, 6, 28, 2, 2),
    PoolSpec("cifar_max", "max", 64, 32, 32, 2, 2),
    PoolSpec("resnet_max", "max", 8, 64, 112, 3, 2, padding=1),
    PoolSpec("vgg_max", "max", 4, 128, 112, 2, 2),
    PoolSpec("vgg_avg", "avg", 4, 128, 112, 2, 2),
    PoolSpec("ceil_mode_max", "max", 8, 64, 56, 3, 2, ceil_mode=True),
]

GEMM_SIZES = [512, 1024, 2048]


def _forward_and_grads(fn, inputs, grad_output):
    out = fn(*inputs)
    return (out, *torch.autograd.grad(out, inputs, grad_output))


def conv_case(spec: ConvSpec, backward: bool, device, dtype):
    torch_layer = torch.nn.Conv2d(spec.c_in, spec.c_out, spec.k, spec.stride, spec.padding,
                                  spec.dilation, spec.groups)  # torch's default init
    weight = torch_layer.weight.detach().to(device, dtype)
    bias = torch_layer.bias.detach().to(device, dtype)
    x = torch.randn(spec.n, spec.c_in, spec.hw, spec.hw, device=device, dtype=dtype)
    args = dict(stride=spec.stride, padding=spec.padding, dilation=spec.dilation, groups=spec.groups)
    # Looked up now (not at import) so a test can substitute a broken kernel.
    ours = partial(cnnext.functional.conv2d, **args)
    theirs = partial(F.conv2d, **args)
    if not backward:
        return Case(torch=lambda: theirs(x, weight, bias), cnnext=lambda: ours(x, weight, bias),
                    grad_enabled=False)
    inputs = [t.requires_grad_() for t in (x, weight, bias)]
    grad_output = torch.randn(spec.n, spec.c_out, spec.out_hw, spec.out_hw, device=device, dtype=dtype)
    return Case(torch=lambda: _forward_and_grads(theirs, inputs, grad_output),
                cnnext=lambda: _forward_and_grads(ours, inputs, grad_output))


def pool_case(spec: PoolSpec, backward: bool, device, dtype):
    name = f"{spec.kind}_pool2d"
    ours = getattr(cnnext.functional, name, None)
    if ours is None:
        raise Unavailable(f"cnnext.functional.{name} is not available in this build")
    args = dict(kernel_size=spec.k, stride=spec.stride, padding=spec.padding, ceil_mode=spec.ceil_mode)
    ours, theirs = partial(ours, **args), partial(getattr(F, name), **args)
    x = torch.randn(spec.n, spec.c, spec.hw, spec.hw, device=device, dtype=dtype)
    if not backward:
        return Case(torch=lambda: theirs(x), cnnext=lambda: ours(x), grad_enabled=False)
    x.requires_grad_()
    grad_output = torch.randn(spec.n, spec.c, spec.out_hw, spec.out_hw, device=device, dtype=dtype)
    return Case(torch=lambda: _forward_and_grads(theirs, [x], grad_output),
                cnnext=lambda: _forward_and_grads(ours, [x], grad_output))


def gemm_case(n, device, dtype):
    # The cnnext GEMM is float32 only: this section always runs in float32.
    a = torch.randn(n, n, device=device, dtype=torch.float32)
    b = torch.randn(n, n, device=device, dtype=torch.float32)
    out = torch.empty(n, n, device=device, dtype=torch.float32)
    return Case(torch=lambda: torch.mm(a, b, out=out),
                cnnext=lambda: torch.ops.cnnext.gemm(a, b, False, False, 1.0, 0.0, None, "auto"),
                grad_enabled=False)


def conv_rows():
    rows = []
    for spec in CONV_LAYERS:
        for backward in (False, True):
            rows.append(Row(
                section="conv", name=spec.name, pass_="fwd+bwd" if backward else "fwd",
                shape=spec.shape, quick=spec.quick, flops=spec.flops * (3 if backward else 1),
                make=partial(conv_case, spec, backward), spec=spec))
    return rows


def pool_rows(element_size):
    rows = []
    for spec in POOL_LAYERS:
        for backward in (False, True):
            rows.append(Row(
                section="pool", name=spec.name, pass_="fwd+bwd" if backward else "fwd",
                shape=spec.shape, quick=spec.quick, bytes=spec.min_bytes(element_size, backward),
                make=partial(pool_case, spec, backward), spec=spec))
    return rows


def gemm_rows():
    return [Row(section="gemm", name=f"gemm_{n}", pass_="fwd", shape=f"{n}² @ {n}² float32",
                quick=True, flops=2 * n**3, make=lambda device, dtype, n=n: gemm_case(n, device, dtype),
                dtype_override=torch.float32)
            for n in GEMM_SIZES]


def largest_layers(count):
    """The conv layers with the most activation memory: where peak extra memory matters."""
    return sorted(CONV_LAYERS, key=lambda s: -s.activation_bytes_per_element)[:count]

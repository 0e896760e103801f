"""The mobile family, built from depthwise-separable convs: ShuffleNet-v2 1.0x (Ma et al.
2018), MobileNetV2 (Sandler et al. 2018), MobileNetV3-Small and -Large (Howard et al. 2019)
and EfficientNet-B0 (Tan & Le 2019)."""
import torch
from torch import nn

from .resnet import SqueezeExcite


def make_divisible(value, divisor=8):
    """Round to a multiple of divisor, never more than 10% below the value (the rule the
    MobileNet/EfficientNet papers' reference code uses for channel counts)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn(c_in, c_out, kernel_size=1, stride=1, groups=1, activation=nn.ReLU):
    layers = [nn.Conv2d(c_in, c_out, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(c_out)]
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)


# ---- ShuffleNet-v2 ------------------------------------------------------------------------

def channel_shuffle(x, groups):
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """Stride 1: half the channels pass, the other half go 1x1, depthwise 3x3, 1x1. Stride 2:
    both halves are computed from the whole input (the left one depthwise 3x3/2 then 1x1)."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        half = c_out // 2
        self.stride = stride
        self.left = nn.Identity()
        if stride > 1:
            self.left = nn.Sequential(conv_bn(c_in, c_in, 3, stride, groups=c_in, activation=None),
                                      conv_bn(c_in, half))
        right_in = c_in if stride > 1 else half
        self.right = nn.Sequential(conv_bn(right_in, half), conv_bn(half, half, 3, stride, groups=half, activation=None),
                                   conv_bn(half, half))

    def forward(self, x):
        if self.stride == 1:
            left, right = x.chunk(2, dim=1)
            out = torch.cat([left, self.right(right)], 1)
        else:
            out = torch.cat([self.left(x), self.right(x)], 1)
        return channel_shuffle(out, 2)


def shufflenet_v2_x1_0(num_classes=1000):
    """3x3/2 stem to 24, 3x3/2 max pool, stages of [4, 8, 4] units to 116, 232, 464, 1x1 to 1024."""
    layers = [conv_bn(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1)]
    c_in = 24
    for c_out, repeats in ((116, 4), (232, 8), (464, 4)):
        layers += [ShuffleUnit(c_in, c_out, 2)] + [ShuffleUnit(c_out, c_out, 1) for _ in range(repeats - 1)]
        c_in = c_out
    layers += [conv_bn(464, 1024), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, num_classes)]
    return nn.Sequential(*layers)


# ---- Inverted residuals: MobileNetV2, MobileNetV3, EfficientNet ----------------------------

class InvertedResidual(nn.Module):
    """1x1 expand (unless the ratio is 1), depthwise kxk, optional squeeze-excite, linear 1x1
    project; identity shortcut when stride 1 and the channels match."""

    def __init__(self, c_in, expanded, c_out, kernel_size, stride, activation, se_squeeze=0,
                 se_activation=nn.ReLU, se_gate=nn.Hardsigmoid):
        super().__init__()
        layers = []
        if expanded != c_in:
            layers.append(conv_bn(c_in, expanded, activation=activation))
        layers.append(conv_bn(expanded, expanded, kernel_size, stride, groups=expanded, activation=activation))
        if se_squeeze:
            layers.append(SqueezeExcite(expanded, se_squeeze, se_activation, se_gate))
        layers.append(conv_bn(expanded, c_out, activation=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


def mobilenet_v2(num_classes=1000):
    """3x3/2 stem to 32, 17 inverted residual blocks (expansion 6, ReLU6), 1x1 to 1280."""
    relu6 = nn.ReLU6
    layers, c_in = [conv_bn(3, 32, 3, 2, activation=relu6)], 32
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            layers.append(InvertedResidual(c_in, c_in * t, c, 3, s if i == 0 else 1, relu6))
            c_in = c
    layers += [conv_bn(320, 1280, activation=relu6), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Dropout(0.2), nn.Linear(1280, num_classes)]
    return nn.Sequential(*layers)


# (input, kernel, expanded, output, squeeze-excite, hard-swish, stride) per block.
MOBILENET_V3_LARGE = [
    (16, 3, 16, 16, False, False, 1), (16, 3, 64, 24, False, False, 2), (24, 3, 72, 24, False, False, 1),
    (24, 5, 72, 40, True, False, 2), (40, 5, 120, 40, True, False, 1), (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 2), (80, 3, 200, 80, False, True, 1), (80, 3, 184, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1), (80, 3, 480, 112, True, True, 1), (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 2), (160, 5, 960, 160, True, True, 1), (160, 5, 960, 160, True, True, 1),
]
MOBILENET_V3_SMALL = [
    (16, 3, 16, 16, True, False, 2), (16, 3, 72, 24, False, False, 2), (24, 3, 88, 24, False, False, 1),
    (24, 5, 96, 40, True, True, 2), (40, 5, 240, 40, True, True, 1), (40, 5, 240, 40, True, True, 1),
    (40, 5, 120, 48, True, True, 1), (48, 5, 144, 48, True, True, 1), (48, 5, 288, 96, True, True, 2),
    (96, 5, 576, 96, True, True, 1), (96, 5, 576, 96, True, True, 1),
]


def _mobilenet_v3(plan, last_channels, hidden, num_classes):
    layers = [conv_bn(3, 16, 3, 2, activation=nn.Hardswish)]
    for c_in, k, expanded, c_out, se, hswish, stride in plan:
        squeeze = make_divisible(expanded // 4) if se else 0
        layers.append(InvertedResidual(c_in, expanded, c_out, k, stride, nn.Hardswish if hswish else nn.ReLU,
                                       squeeze))
    layers += [conv_bn(plan[-1][3], last_channels, activation=nn.Hardswish), nn.AdaptiveAvgPool2d(1),
               nn.Flatten(), nn.Linear(last_channels, hidden), nn.Hardswish(), nn.Dropout(0.2),
               nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)


def mobilenet_v3_large(num_classes=1000):
    return _mobilenet_v3(MOBILENET_V3_LARGE, 960, 1280, num_classes)


def mobilenet_v3_small(num_classes=1000):
    return _mobilenet_v3(MOBILENET_V3_SMALL, 576, 1024, num_classes)


# (expansion, kernel, stride, input, output, blocks) per stage of EfficientNet-B0.
EFFICIENTNET_B0 = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
                   (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]


def efficientnet_b0(num_classes=1000):
    """3x3/2 stem to 32, 16 MBConv blocks with squeeze-excite (squeeze to a quarter of the
    block's input channels, SiLU, sigmoid gate), 1x1 to 1280."""
    layers = [conv_bn(3, 32, 3, 2, activation=nn.SiLU)]
    for t, k, s, c_in, c_out, n in EFFICIENTNET_B0:
        for i in range(n):
            block_in = c_in if i == 0 else c_out
            layers.append(InvertedResidual(block_in, block_in * t, c_out, k, s if i == 0 else 1, nn.SiLU,
                                           max(1, block_in // 4), nn.SiLU, nn.Sigmoid))
    layers += [conv_bn(320, 1280, activation=nn.SiLU), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Dropout(0.2), nn.Linear(1280, num_classes)]
    return nn.Sequential(*layers)

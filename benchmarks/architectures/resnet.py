"""ResNet-18 and ResNet-50 (He et al. 2015, with the stride on the 3x3 conv of a bottleneck as
in torchvision's "v1.5"), ResNeXt-50 32x4d (Xie et al. 2017) and RegNetY-400MF (Radosavovic
et al. 2020): the residual family."""
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convs; a 1x1 projection on the shortcut when the shape changes."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, possibly grouped), 1x1 expand by 4."""

    def __init__(self, c_in, planes, stride, groups=1, width_per_group=64):
        super().__init__()
        width = planes * width_per_group // 64 * groups
        c_out = planes * 4
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + self.shortcut(x))


def _stem():
    return [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1)]


def _head(c, num_classes):
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]


def resnet18(num_classes=1000):
    """7x7/2 stem, 3x3/2 max pool, basic blocks [2, 2, 2, 2] of 64-512 channels."""
    layers, c_in = _stem(), 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
        c_in = c_out
    return nn.Sequential(*layers, *_head(512, num_classes))


def _bottleneck_net(num_classes, groups, width_per_group):
    layers, c_in = _stem(), 64
    for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(c_in, planes, stride if i == 0 else 1, groups, width_per_group))
            c_in = planes * 4
    return nn.Sequential(*layers, *_head(2048, num_classes))


def resnet50(num_classes=1000):
    """Bottleneck blocks [3, 4, 6, 3], widths 64-512, outputs 256-2048."""
    return _bottleneck_net(num_classes, groups=1, width_per_group=64)


def resnext50_32x4d(num_classes=1000):
    """ResNet-50 with 32 groups of 4 channels (at the first stage) in every 3x3 conv."""
    return _bottleneck_net(num_classes, groups=32, width_per_group=4)


class SqueezeExcite(nn.Module):
    """Global average pool, 1x1 squeeze, activation, 1x1 excite, gate, rescale."""

    def __init__(self, channels, squeeze, activation=nn.ReLU, gate=nn.Sigmoid):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = activation()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = gate()

    def forward(self, x):
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class RegNetBlock(nn.Module):
    """RegNet's residual bottleneck (ratio 1): 1x1, grouped 3x3 (group width g), SE, 1x1."""

    def __init__(self, c_in, c_out, stride, group_width, se_ratio):
        super().__init__()
        self.f = nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, stride, 1, groups=c_out // group_width, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            SqueezeExcite(c_out, int(round(se_ratio * c_in))),
            nn.Conv2d(c_out, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.shortcut(x) + self.f(x))


def regnet_y_400mf(num_classes=1000):
    """RegNetY-400MF: stem 3x3/2 to 32, stages of widths [48, 104, 208, 440] and depths
    [1, 3, 6, 6], group width 8, squeeze-excite ratio 0.25."""
    layers = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True)]
    c_in = 32
    for width, depth in ((48, 1), (104, 3), (208, 6), (440, 6)):
        for i in range(depth):
            layers.append(RegNetBlock(c_in, width, 2 if i == 0 else 1, 8, 0.25))
            c_in = width
    return nn.Sequential(*layers, *_head(440, num_classes))

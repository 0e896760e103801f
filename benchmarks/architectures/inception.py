"""GoogLeNet (Szegedy et al. 2014, with batch norm as torchvision builds it, and the 5x5
branch of the paper) and Inception-v3 (Szegedy et al. 2015, 299x299 input, without the
auxiliary classifier, which only runs in training)."""
import torch
from torch import nn


class ConvBN(nn.Module):
    """Conv (no bias), batch norm (eps 1e-3), ReLU."""

    def __init__(self, c_in, c_out, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class Branches(nn.Module):
    """Runs every branch on the same input and concatenates along channels."""

    def __init__(self, *branches):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        return torch.cat([b(x) for b in self.branches], 1)


def _seq(*layers):
    return nn.Sequential(*layers)


# ---- GoogLeNet ----------------------------------------------------------------------------

def _googlenet_module(c_in, c1, c3r, c3, c5r, c5, pool_proj):
    return Branches(
        ConvBN(c_in, c1, 1),
        _seq(ConvBN(c_in, c3r, 1), ConvBN(c3r, c3, 3, padding=1)),
        _seq(ConvBN(c_in, c5r, 1), ConvBN(c5r, c5, 5, padding=2)),
        _seq(nn.MaxPool2d(3, 1, 1, ceil_mode=True), ConvBN(c_in, pool_proj, 1)))


def googlenet(num_classes=1000):
    """Nine inception modules (3a-5b) between ceil-mode 3x3/2 max pools."""
    return nn.Sequential(
        ConvBN(3, 64, 7, 2, 3), nn.MaxPool2d(3, 2, ceil_mode=True),
        ConvBN(64, 64, 1), ConvBN(64, 192, 3, padding=1), nn.MaxPool2d(3, 2, ceil_mode=True),
        _googlenet_module(192, 64, 96, 128, 16, 32, 32),
        _googlenet_module(256, 128, 128, 192, 32, 96, 64),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        _googlenet_module(480, 192, 96, 208, 16, 48, 64),
        _googlenet_module(512, 160, 112, 224, 24, 64, 64),
        _googlenet_module(512, 128, 128, 256, 24, 64, 64),
        _googlenet_module(512, 112, 144, 288, 32, 64, 64),
        _googlenet_module(528, 256, 160, 320, 32, 128, 128),
        nn.MaxPool2d(2, 2, ceil_mode=True),
        _googlenet_module(832, 256, 160, 320, 32, 128, 128),
        _googlenet_module(832, 384, 192, 384, 48, 128, 128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(1024, num_classes))


# ---- Inception-v3 -------------------------------------------------------------------------

def _avg_pool_branch(c_in, c_out):
    return _seq(nn.AvgPool2d(3, 1, 1), ConvBN(c_in, c_out, 1))


def _inception_a(c_in, pool_features):  # 35x35: 1x1, 5x5, double 3x3, pool
    return Branches(
        ConvBN(c_in, 64, 1),
        _seq(ConvBN(c_in, 48, 1), ConvBN(48, 64, 5, padding=2)),
        _seq(ConvBN(c_in, 64, 1), ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, padding=1)),
        _avg_pool_branch(c_in, pool_features))


def _inception_b(c_in):  # 35x35 -> 17x17
    return Branches(
        ConvBN(c_in, 384, 3, 2),
        _seq(ConvBN(c_in, 64, 1), ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, 2)),
        nn.MaxPool2d(3, 2))


def _inception_c(c_in, c7):  # 17x17: factorised 7x7 as 1x7 and 7x1
    row = lambda a, b: ConvBN(a, b, (1, 7), padding=(0, 3))
    col = lambda a, b: ConvBN(a, b, (7, 1), padding=(3, 0))
    return Branches(
        ConvBN(c_in, 192, 1),
        _seq(ConvBN(c_in, c7, 1), row(c7, c7), col(c7, 192)),
        _seq(ConvBN(c_in, c7, 1), col(c7, c7), row(c7, c7), col(c7, c7), row(c7, 192)),
        _avg_pool_branch(c_in, 192))


def _inception_d(c_in):  # 17x17 -> 8x8
    return Branches(
        _seq(ConvBN(c_in, 192, 1), ConvBN(192, 320, 3, 2)),
        _seq(ConvBN(c_in, 192, 1), ConvBN(192, 192, (1, 7), padding=(0, 3)),
             ConvBN(192, 192, (7, 1), padding=(3, 0)), ConvBN(192, 192, 3, 2)),
        nn.MaxPool2d(3, 2))


def _split_1x3_3x1(c_in, c_out):
    return Branches(ConvBN(c_in, c_out, (1, 3), padding=(0, 1)), ConvBN(c_in, c_out, (3, 1), padding=(1, 0)))


def _inception_e(c_in):  # 8x8: expanded filter bank outputs
    return Branches(
        ConvBN(c_in, 320, 1),
        _seq(ConvBN(c_in, 384, 1), _split_1x3_3x1(384, 384)),
        _seq(ConvBN(c_in, 448, 1), ConvBN(448, 384, 3, padding=1), _split_1x3_3x1(384, 384)),
        _avg_pool_branch(c_in, 192))


def inception_v3(num_classes=1000):
    """Stem of five convs and two 3x3/2 max pools, then modules A x3, B, C x4, D, E x2."""
    return nn.Sequential(
        ConvBN(3, 32, 3, 2), ConvBN(32, 32, 3), ConvBN(32, 64, 3, padding=1), nn.MaxPool2d(3, 2),
        ConvBN(64, 80, 1), ConvBN(80, 192, 3), nn.MaxPool2d(3, 2),
        _inception_a(192, 32), _inception_a(256, 64), _inception_a(288, 64),
        _inception_b(288),
        _inception_c(768, 128), _inception_c(768, 160), _inception_c(768, 160), _inception_c(768, 192),
        _inception_d(768),
        _inception_e(1280), _inception_e(2048),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(2048, num_classes))

"""cnnext: hand-written conv2d and pooling kernels as PyTorch custom operators."""
from . import backends, functional, ops
from .convert import convert
from .nn import Conv2d
from .nn import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d

__all__ = [
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "AvgPool2d",
    "Conv2d",
    "MaxPool2d",
    "backends",
    "convert",
    "functional",
    "ops",
]
__version__ = "0.1.0"

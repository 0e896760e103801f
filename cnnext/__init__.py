"""cnnext: hand-written conv2d and pooling kernels as PyTorch custom operators."""
from . import functional, ops
from .convert import convert, unconvert
from .export import decompositions, onnx_translation_table
from .nn import Conv2d, Conv2dReLU
from .nn import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d

__all__ = [
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "AvgPool2d",
    "Conv2d",
    "Conv2dReLU",
    "MaxPool2d",
    "convert",
    "decompositions",
    "onnx_translation_table",
    "unconvert",
    "functional",
    "ops",
]
__version__ = "0.1.0"

"""cnnext: hand-written conv2d and pooling kernels as PyTorch custom operators."""
from ._torch_check import check_torch_version

check_torch_version()  # before the extension loads: a clear ImportError, not an undefined symbol

from . import backends, functional, ops  # noqa: E402
from .convert import convert, unconvert  # noqa: E402
from .export import decompositions, onnx_translation_table  # noqa: E402
from .nn import Conv2d, Conv2dReLU  # noqa: E402
from .nn import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d  # noqa: E402

__all__ = [
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "AvgPool2d",
    "Conv2d",
    "Conv2dReLU",
    "MaxPool2d",
    "backends",
    "convert",
    "decompositions",
    "onnx_translation_table",
    "unconvert",
    "functional",
    "ops",
]
__version__ = "0.1.0"

"""cnnext: hand-written conv2d and pooling kernels as PyTorch custom operators."""
from . import functional, ops
from .convert import convert
from .nn import Conv2d

__all__ = ["Conv2d", "convert", "functional", "ops"]
__version__ = "0.1.0"

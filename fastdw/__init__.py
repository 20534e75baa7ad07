"""fastdw: fast depthwise and depthwise-separable convolutions for PyTorch."""
from . import reference
from .backends import available_backends
from .ops import depthwise_conv2d

__version__ = "0.1.0"
__all__ = ["depthwise_conv2d", "available_backends", "reference", "__version__"]

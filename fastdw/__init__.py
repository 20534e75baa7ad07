"""fastdw: fast depthwise and depthwise-separable convolutions for PyTorch."""
from . import reference
from .backends import available_backends
from .errors import ArgumentError, DtypeError
from .ops import depthwise_conv2d
from .separable import depthwise_separable_conv2d
from . import export, models, nn
from .convert import ConversionReport, convert
from .revert import RevertReport, revert
from .nn import DepthwiseConv2d, DepthwiseSeparableConv2d

__version__ = "0.1.0"

from . import planner  # noqa: E402  (its plan files are keyed by __version__)
from .planner import explain  # noqa: E402

planner.load_plans()

__all__ = ["depthwise_conv2d", "depthwise_separable_conv2d", "available_backends", "reference",
           "__version__", "nn", "models", "convert", "ConversionReport", "DepthwiseConv2d",
           "DepthwiseSeparableConv2d", "export", "revert", "RevertReport",
           "ArgumentError", "DtypeError", "explain", "planner"]

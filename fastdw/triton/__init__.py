"""Triton kernels of fastdw: the fused depthwise + pointwise convolution (forward and backward).

Importing this module registers ``torch.ops.fastdw.depthwise_separable_conv2d`` (and its two
backward ops). Use it through ``fastdw.depthwise_separable_conv2d``, which validates the
arguments and picks this path or the composed one (``fastdw.backends.separable_backend``).
Set TRITON_INTERPRET=1 before the first import to run the kernels on CPU tensors.
"""
from .separable import (  # noqa: F401
    ACTIVATION_CODES,
    SUPPORTED_DTYPES,
    separable_conv2d,
    unsupported_reason,
)
from .separable import _INTERPRETING as INTERPRETED  # noqa: F401

__all__ = ["separable_conv2d", "unsupported_reason", "INTERPRETED", "ACTIVATION_CODES",
           "SUPPORTED_DTYPES"]

"""Convolution geometry: the one Python source of F.conv2d's argument forms and size rules.

Used by the public API (``fastdw._args``), the ops' fake kernels (``fastdw.ops``), the Triton
launcher and the benchmark suites; csrc/depthwise.h is the C++ side, and
tests/test_geometry.py holds the two together case by case.

Arguments are F.conv2d's: stride, padding and dilation are an int or a 1- or 2-element tuple,
list or ``torch.Size`` of ints (a 1-element one is used for both axes); ``padding`` may be
``'same'`` or ``'valid'``. Sizes follow PyTorch's convolution docs (``nn.Conv2d``, "Shape"):

    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
"""
from __future__ import annotations

import operator
from typing import Sequence, Tuple, Union

import torch

from .errors import ArgumentError

Pair = Tuple[int, int]
IntOrPair = Union[int, Sequence[int]]

_INT64_MAX = 2**63 - 1


def _as_int(v):
    """v as a Python int if it is an integer (int, NumPy integer, 0-d integer tensor), not a
    bool: what F.conv2d's argument parser takes for an int."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, torch.Tensor) and (v.dim() != 0 or v.dtype.is_floating_point
                                        or v.dtype.is_complex or v.dtype == torch.bool):
        return None
    # Asked, not tried: torch.compile (Dynamo, torch 2.11) cannot trace a caught TypeError.
    return operator.index(v) if hasattr(type(v), "__index__") else None


def pair(value: IntOrPair, name: str) -> Pair:
    """An int, or a 1- or 2-element tuple/list/``torch.Size`` of ints, as (h, w).

    Raises TypeError for another type (as F.conv2d does), ArgumentError for a sequence of
    another length or a value outside int64."""
    single = _as_int(value)
    if single is not None:
        result = (single, single)
    elif isinstance(value, (tuple, list)) and all(_as_int(v) is not None for v in value):
        if len(value) not in (1, 2):
            raise ArgumentError(f"fastdw: {name} must be an int or a pair of ints (h, w) (or a "
                                f"1-element sequence, used for both), got {value!r}")
        result = (_as_int(value[0]), _as_int(value[-1]))
    else:
        raise TypeError(f"fastdw: {name} must be an int or a pair of ints (h, w), got {value!r}")
    if any(abs(v) > _INT64_MAX for v in result):
        raise ArgumentError(f"fastdw: {name} is out of the int64 range, got {value!r}")
    return result


def positive_pair(value: IntOrPair, name: str) -> Pair:
    p = pair(value, name)
    if p[0] <= 0 or p[1] <= 0:
        raise ArgumentError(f"fastdw: {name} must be positive, got {value!r}")
    return p


def same_padding(kernel: Pair, dilation: Pair, stride: Pair) -> Tuple[Pair, Pair]:
    """F.conv2d's padding='same': returns (symmetric pad, extra pad on the bottom/right).

    When dilation * (k - 1) is odd PyTorch pads one more element after than before.
    """
    if stride != (1, 1):
        raise ArgumentError("fastdw: padding='same' is not supported for strided convolutions "
                            f"(stride={stride}), as in F.conv2d")
    total = [d * (k - 1) for k, d in zip(kernel, dilation)]
    return (total[0] // 2, total[1] // 2), (total[0] % 2, total[1] % 2)


def normalize(kernel: Pair, stride, padding, dilation) -> Tuple[Pair, Pair, Pair, Pair]:
    """Normalises stride, padding and dilation for a (kh, kw) kernel.

    Returns (stride, padding, dilation, extra) as pairs of ints, where extra is the (h, w) extra
    bottom/right padding that padding='same' needs for even effective kernels. Raises what
    F.conv2d raises for the same arguments (see the module docstring).
    """
    stride = positive_pair(stride, "stride")
    dilation = positive_pair(dilation, "dilation")
    extra = (0, 0)
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            padding, extra = same_padding(kernel, dilation, stride)
        else:
            raise ArgumentError(f"fastdw: padding must be an int, a pair, 'same' or 'valid', "
                                f"got {padding!r}")
    else:
        padding = pair(padding, "padding")
        if padding[0] < 0 or padding[1] < 0:
            raise ArgumentError(f"fastdw: padding must be non-negative, got {padding}")
    return stride, padding, dilation, extra


def effective_kernel(kernel: int, dilation: int) -> int:
    """The extent of a dilated kernel along one axis: dilation * (kernel - 1) + 1."""
    return dilation * (kernel - 1) + 1


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """The output extent along one axis (the formula in the module docstring)."""
    return (size + 2 * padding - effective_kernel(kernel, dilation)) // stride + 1


def output_hw(hw: Sequence[int], kernel: Sequence[int], stride: Pair, padding: Pair,
              dilation: Pair) -> Pair:
    """(OH, OW) for an (H, W) input and a (kh, kw) kernel."""
    return tuple(output_size(*axis) for axis in zip(hw, kernel, stride, padding, dilation))

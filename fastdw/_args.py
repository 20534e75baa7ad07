"""Argument normalisation and validation for the public API.

Every message names the argument and what was expected, so a user's mistake never reaches a
kernel as a crash or a silently wrong answer. The arguments accepted are F.conv2d's: stride,
padding and dilation are an int or a 1- or 2-element tuple, list or ``torch.Size`` of ints (a
1-element one is used for both axes), ``padding`` may be ``'same'`` or ``'valid'``.

Exception types follow PyTorch, so code written for ``nn.Conv2d`` catches fastdw's errors:
an argument of the wrong Python type raises ``TypeError`` (as F.conv2d's argument parser does);
a wrong value, shape or device raises ``ArgumentError`` and a wrong dtype or tensor layout
``DtypeError``, which are ``ValueError`` / ``TypeError`` and also ``RuntimeError`` (what
F.conv2d raises for the same mistakes).
"""
from __future__ import annotations

import operator
from typing import Optional, Sequence, Tuple, Union

import torch

Pair = Tuple[int, int]
IntOrPair = Union[int, Sequence[int]]

_FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)

_INT64_MAX = 2**63 - 1


class ArgumentError(ValueError, RuntimeError):
    """A bad value, shape, size or device: a ``ValueError``, and a ``RuntimeError`` as
    F.conv2d raises for the same mistake."""


class DtypeError(TypeError, RuntimeError):
    """A tensor of an unsupported or mismatched dtype or layout: a ``TypeError``, and a
    ``RuntimeError`` as F.conv2d raises for the same mistake."""


def _as_int(v):
    """v as a Python int if it is an integer (int, NumPy integer, 0-d integer tensor), not a
    bool: what F.conv2d's argument parser takes for an int."""
    if isinstance(v, bool):
        return None
    if isinstance(v, torch.Tensor) and (v.dim() != 0 or v.dtype.is_floating_point
                                        or v.dtype.is_complex or v.dtype == torch.bool):
        return None
    try:
        return operator.index(v)
    except TypeError:
        return None


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


def check_tensor(t, name: str, ndim: Optional[int] = None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"fastdw: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOAT_DTYPES:
        raise DtypeError(
            f"fastdw: {name} must be float64, float32, float16 or bfloat16, got {t.dtype}")
    if t.layout != torch.strided:
        raise DtypeError(f"fastdw: {name} must be a dense (strided) tensor, got {t.layout}")
    if ndim is not None and t.dim() != ndim:
        raise ArgumentError(f"fastdw: {name} must be {ndim}-D, got shape {tuple(t.shape)}")


def check_same(ref: torch.Tensor, ref_name: str, t: torch.Tensor, name: str) -> None:
    if t.device != ref.device:
        raise ArgumentError(f"fastdw: {name} is on {t.device} but {ref_name} is on {ref.device}")
    if t.dtype != ref.dtype:
        raise DtypeError(f"fastdw: {name} has dtype {t.dtype} but {ref_name} has dtype "
                         f"{ref.dtype}")


def same_padding(kernel: Pair, dilation: Pair, stride: Pair) -> Tuple[Pair, Pair]:
    """F.conv2d's padding='same': returns (symmetric pad, extra pad on the bottom/right).

    When dilation * (k - 1) is odd PyTorch pads one more element after than before.
    """
    if stride != (1, 1):
        raise ArgumentError("fastdw: padding='same' is not supported for strided convolutions "
                            f"(stride={stride}), as in F.conv2d")
    total = [d * (k - 1) for k, d in zip(kernel, dilation)]
    return (total[0] // 2, total[1] // 2), (total[0] % 2, total[1] % 2)


def geometry(kernel: Pair, stride, padding, dilation) -> Tuple[Pair, Pair, Pair, Pair]:
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


def conv_args(input, weight, bias, stride, padding, dilation):
    """Validates depthwise-conv arguments.

    Returns (stride, padding, dilation, extra) as ``geometry`` does, after checking the tensors.
    """
    check_tensor(input, "input")
    if input.dim() != 4:
        raise ArgumentError(
            f"fastdw: input must be 4-D (N, C, H, W), got shape {tuple(input.shape)}")
    check_tensor(weight, "weight")
    check_same(input, "input", weight, "weight")
    channels = input.shape[1]
    if channels == 0:
        raise ArgumentError("fastdw: input must have at least one channel")
    if (weight.dim() != 4 or weight.shape[1] != 1 or weight.shape[0] == 0
            or weight.shape[0] % channels != 0 or weight.shape[2] == 0 or weight.shape[3] == 0):
        raise ArgumentError(
            f"fastdw: weight must have shape (C*m, 1, kh, kw) for a depthwise conv of C={channels} "
            f"channels (m >= 1, kh, kw >= 1), got {tuple(weight.shape)}")
    if bias is not None:
        check_tensor(bias, "bias")
        check_same(input, "input", bias, "bias")
        if bias.shape != (weight.shape[0],):
            raise ArgumentError(
                f"fastdw: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if input.shape[0] > 0 and (input.shape[2] == 0 or input.shape[3] == 0):
        raise ArgumentError(
            f"fastdw: input height and width must be positive for a non-empty batch (as in "
            f"F.conv2d), got shape {tuple(input.shape)}")
    kernel = (int(weight.shape[2]), int(weight.shape[3]))
    stride, padding, dilation, extra = geometry(kernel, stride, padding, dilation)
    for axis, size in (("height", 2), ("width", 3)):
        i = size - 2
        effective = dilation[i] * (kernel[i] - 1) + 1
        padded = input.shape[size] + 2 * padding[i] + extra[i]
        if effective > padded:
            raise ArgumentError(
                f"fastdw: the dilated kernel {axis} ({effective}) is larger than the padded input "
                f"{axis} ({padded}); input {tuple(input.shape)}, weight {tuple(weight.shape)}, "
                f"padding {padding}, dilation {dilation}")
    return stride, padding, dilation, extra

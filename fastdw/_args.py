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

from typing import Optional

import torch

from . import geometry
from .errors import ArgumentError, DtypeError

_FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)

__all__ = ["check_tensor", "check_same", "conv_args"]


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


def conv_args(input, weight, bias, stride, padding, dilation):
    """Validates depthwise-conv arguments.

    Returns (stride, padding, dilation, extra) as ``geometry.normalize`` does, after checking
    the tensors.
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
    stride, padding, dilation, extra = geometry.normalize(kernel, stride, padding, dilation)
    for axis, size in (("height", 2), ("width", 3)):
        i = size - 2
        effective = geometry.effective_kernel(kernel[i], dilation[i])
        padded = input.shape[size] + 2 * padding[i] + extra[i]
        if effective > padded:
            raise ArgumentError(
                f"fastdw: the dilated kernel {axis} ({effective}) is larger than the padded input "
                f"{axis} ({padded}); input {tuple(input.shape)}, weight {tuple(weight.shape)}, "
                f"padding {padding}, dilation {dilation}")
    return stride, padding, dilation, extra

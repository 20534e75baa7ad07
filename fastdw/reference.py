"""References built on F.conv2d: the ground truth every fastdw kernel is tested against.

This module never imports a fastdw kernel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ACTIVATIONS = {
    None: lambda t: t,
    "none": lambda t: t,
    "relu": F.relu,
    "relu6": F.relu6,
    "gelu": F.gelu,
}
# Lipschitz constant L of each activation: |act(t)| <= L |t| and |act'(t)| <= L for every t (exact
# GELU: max of Phi(t) + t phi(t), at t = sqrt(2)). For the magnitudes of fastdw.accuracy.
LIPSCHITZ = {None: 1.0, "none": 1.0, "relu": 1.0, "relu6": 1.0, "gelu": 1.1289}


def _maybe_upcast(tensors, upcast: bool):
    if not upcast:
        return tensors
    return [None if t is None else t.to(torch.float64) for t in tensors]


def depthwise_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, *,
                     upcast: bool = False):
    """``F.conv2d(..., groups=C)``. With ``upcast=True`` computes in float64 (on the same
    device) and returns float64: the reference for every tolerance check."""
    input, weight, bias = _maybe_upcast([input, weight, bias], upcast)
    return F.conv2d(input, weight, bias, stride, padding, dilation, groups=input.shape[-3])


def depthwise_separable_conv2d(input, dw_weight, dw_bias, pw_weight, pw_bias, stride=1,
                               padding=0, dilation=1, activation=None, *, upcast: bool = False,
                               bound: bool = False):
    """Depthwise conv, optional activation, then a 1x1 (pointwise) conv:
    ``pw(act(dw(x) + b_dw)) + b_pw``. With ``bound=True`` the activation is replaced by
    ``LIPSCHITZ[activation] * t``: evaluated on absolute values (or ones) that gives the
    magnitudes (or term counts) of the error bound in ``fastdw.accuracy``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of "
                         f"{sorted(k for k in ACTIVATIONS if k)}")
    input, dw_weight, dw_bias, pw_weight, pw_bias = _maybe_upcast(
        [input, dw_weight, dw_bias, pw_weight, pw_bias], upcast)
    mid = depthwise_conv2d(input, dw_weight, dw_bias, stride, padding, dilation)
    mid = LIPSCHITZ[activation] * mid if bound else ACTIVATIONS[activation](mid)
    return F.conv2d(mid, pw_weight, pw_bias)

"""The activations of ``depthwise_separable_conv2d``: the product's one registry.

Every fastdw path that applies or differentiates the separable conv's activation (the composed
path, the fused op's forward-mode derivative, the export decompositions, the benchmark, the
Triton kernels' codes, ``convert``'s module matching) reads it from here. ``fastdw.reference``
keeps its own independent definitions, so a mistake here cannot reach the oracle too.

Each entry is PyTorch's own function and its own derivative kernel (the ones autograd uses for
``F.relu``, ``F.relu6`` and exact ``F.gelu``), so fastdw's values and derivatives are PyTorch's.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

_aten = torch.ops.aten


@dataclasses.dataclass(frozen=True)
class Activation:
    """``apply(x)``; ``derivative(t, x)`` = d apply(x) * t (elementwise, so the same product
    serves forward and reverse mode); ``triton_code``: the ACT constexpr of the fused kernels;
    ``module``: the nn.Module ``convert`` fuses (None for the identity)."""
    apply: Callable[[torch.Tensor], torch.Tensor]
    derivative: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    triton_code: int
    module: Optional[type]


ACTIVATIONS = {
    "none": Activation(lambda x: x, lambda t, x: t, 0, None),
    "relu": Activation(F.relu, lambda t, x: _aten.threshold_backward(t, x, 0), 1, nn.ReLU),
    "relu6": Activation(F.relu6, lambda t, x: _aten.hardtanh_backward(t, x, 0.0, 6.0), 2,
                        nn.ReLU6),
    "gelu": Activation(F.gelu, lambda t, x: _aten.gelu_backward(t, x), 3, nn.GELU),
}
NAMES = tuple(ACTIVATIONS)


def activation_name(activation: Optional[str]) -> str:
    """The registry key for ``activation`` (None means 'none').

    Raises:
        ValueError: for anything else than None or a name in ``NAMES``.
    """
    if activation is None:
        return "none"
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"fastdw: activation must be None or one of {NAMES}, "
                         f"got {activation!r}")
    return activation


def module_activation(module: nn.Module) -> Optional[str]:
    """The registry name of an activation module that fastdw can fuse exactly (``nn.ReLU``,
    ``nn.ReLU6``, exact ``nn.GELU``), else None."""
    for name, activation in ACTIVATIONS.items():
        if activation.module is not None and type(module) is activation.module:
            if isinstance(module, nn.GELU) and module.approximate != "none":
                return None
            return name
    return None

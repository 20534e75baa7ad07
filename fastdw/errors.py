"""fastdw's exception types: each is also the type PyTorch raises for the same mistake, so code
written for ``nn.Conv2d`` / ``F.conv2d`` (which catches ``RuntimeError``) catches them too."""
from __future__ import annotations

__all__ = ["ArgumentError", "DtypeError"]


class ArgumentError(ValueError, RuntimeError):
    """A bad value, shape, size or device: a ``ValueError``, and a ``RuntimeError`` as
    F.conv2d raises for the same mistake."""


class DtypeError(TypeError, RuntimeError):
    """A tensor of an unsupported or mismatched dtype or layout: a ``TypeError``, and a
    ``RuntimeError`` as F.conv2d raises for the same mistake."""

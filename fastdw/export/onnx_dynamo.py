"""ONNX translations of the fastdw ops for ``torch.onnx.export(..., dynamo=True)``.

The dynamo exporter looks custom ops up in onnxscript's torch_lib registry by qualified name,
where torchvision's ops are registered too (onnxscript/function_libs/torch_lib/ops/vision.py).
Importing this module adds the fastdw ops there (``fastdw.export`` imports it once onnxscript's
registry is imported, see ``fastdw.export.import_hooks``). The same functions also serve as a
``custom_translation_table`` (``translation_table()``), the exporter's public per-call hook.

Translations, written with ONNX opset 18 operators whose semantics are unchanged up to opset
23, the highest ``torch.onnx`` emits (so any opset the dynamo exporter targets, 18..23, works):
  * ``fastdw::depthwise_conv2d`` -> ``Conv(group=C)`` with the op's strides, symmetric pads and
    dilations (an asymmetric ``padding='same'`` is an ``aten.constant_pad_nd`` before the op in
    the exported program, which becomes a ``Pad``);
  * ``fastdw::depthwise_separable_conv2d`` -> ``Conv(group=C)``, the activation (``Relu``;
    ``Clip(0, 6)``; exact GELU as ``0.5 x (1 + Erf(x / sqrt 2))``, as torchlib writes
    ``aten.gelu``), then a 1x1 ``Conv``.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence

import torch
from onnxscript import opset18 as op
from onnxscript.function_libs.torch_lib.registration import torch_op
from onnxscript.function_libs.torch_lib.tensor_typing import TFloat

__all__ = ["depthwise_conv2d", "depthwise_separable_conv2d", "translation_table"]


def _channels(input) -> int:
    shape = input.shape
    channels = shape[1] if shape is not None and len(shape) == 4 else None
    if not isinstance(channels, int):
        raise ValueError(
            "fastdw: ONNX Conv needs the depthwise conv's group count, the input's channel "
            f"dimension, as a static int; got input shape {shape}. Export with a static channel "
            "count (dynamic batch and spatial sizes are fine).")
    return channels


def _conv(input, weight, bias, stride, padding, dilation, group: int):
    pads = [padding[0], padding[1], padding[0], padding[1]]  # ONNX: all begins, then all ends
    args = (input, weight) if bias is None else (input, weight, bias)
    return op.Conv(*args, strides=list(stride), pads=pads, dilations=list(dilation),
                   group=group)


def _activation(x, activation: str):
    if activation == "relu":
        return op.Relu(x)
    if activation == "relu6":
        return op.Clip(x, op.CastLike(0.0, x), op.CastLike(6.0, x))
    if activation == "gelu":
        erf = op.Erf(op.Div(x, op.CastLike(math.sqrt(2.0), x)))
        return op.Mul(x, op.Mul(op.CastLike(0.5, x), op.Add(erf, op.CastLike(1.0, x))))
    if activation == "none":
        return x
    raise ValueError(f"fastdw: no ONNX translation for activation {activation!r}")


def depthwise_conv2d(input: TFloat, weight: TFloat, bias: Optional[TFloat] = None,
                     stride: Sequence[int] = (1, 1), padding: Sequence[int] = (0, 0),
                     dilation: Sequence[int] = (1, 1)) -> TFloat:
    """fastdw::depthwise_conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride,
    int[2] padding, int[2] dilation) -> Tensor"""
    return _conv(input, weight, bias, stride, padding, dilation, _channels(input))


def depthwise_separable_conv2d(input: TFloat, dw_weight: TFloat, dw_bias: Optional[TFloat],
                               pw_weight: TFloat, pw_bias: Optional[TFloat],
                               stride: Sequence[int] = (1, 1), padding: Sequence[int] = (0, 0),
                               dilation: Sequence[int] = (1, 1),
                               activation: str = "none") -> TFloat:
    """fastdw::depthwise_separable_conv2d(Tensor input, Tensor dw_weight, Tensor? dw_bias,
    Tensor pw_weight, Tensor? pw_bias, int[2] stride, int[2] padding, int[2] dilation,
    str activation) -> Tensor; pw_weight is (C_out, C*m)."""
    mid = _conv(input, dw_weight, dw_bias, stride, padding, dilation, _channels(input))
    pw_weight = op.Unsqueeze(pw_weight, op.Constant(value_ints=[2, 3]))
    return _conv(_activation(mid, activation), pw_weight, pw_bias, (1, 1), (0, 0), (1, 1), 1)


_TRANSLATIONS = {"depthwise_conv2d": depthwise_conv2d,
                 "depthwise_separable_conv2d": depthwise_separable_conv2d}


def translation_table() -> Dict[torch._ops.OpOverload, Callable]:
    """``{op: translation}`` for the fastdw ops registered now, for
    ``torch.onnx.export(..., dynamo=True, custom_translation_table=...)`` (not needed after
    ``import fastdw`` unless the automatic registration warned that it failed)."""
    from .decompositions import registered_op
    return {op_: fn for op_, fn in ((registered_op(name), fn) for name, fn in _TRANSLATIONS.items())
            if op_ is not None}


for _name, _fn in _TRANSLATIONS.items():
    torch_op(f"fastdw::{_name}", trace_only=True)(_fn)

"""ONNX symbolics of the fastdw ops for the TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``), registered the way torchvision registers its ops'
(torchvision/ops/_register_onnx_ops.py): ``torch.onnx.register_custom_op_symbolic``.

Registered for opset ``MIN_OPSET`` and up, so for every opset that exporter accepts from 9 to
its maximum (20 in torch 2.14):
  * ``fastdw::depthwise_conv2d`` -> ``Conv(group=C)`` (pads, strides, dilations from the op);
  * ``fastdw::depthwise_separable_conv2d`` -> ``Conv(group=C)``, the activation (``Relu``;
    ``Clip(0, 6)`` with attributes before opset 11, inputs from 11; exact GELU as
    ``0.5 x (1 + Erf(x / sqrt 2))``), then a 1x1 ``Conv``.
``fastdw.export`` calls ``register()`` once ``torch.onnx`` is imported.
"""
from __future__ import annotations

import math

import torch
from torch.onnx import symbolic_helper

__all__ = ["MIN_OPSET", "register"]

#: Lowest opset the symbolics are registered for (Erf appears in opset 9).
MIN_OPSET = 9


def _static_channels(value):
    sizes = symbolic_helper._get_tensor_sizes(value)
    channels = sizes[1] if sizes is not None and len(sizes) == 4 else None
    return channels if isinstance(channels, int) else None


def _channels(g, input) -> int:
    """C, the ``group`` of the ONNX Conv: from the ONNX graph's shape inference, else from the
    type the traced op's input had (shape inference loses it after the Pad of an asymmetric
    ``padding='same'``)."""
    channels = _static_channels(input)
    if channels is None and g.original_node is not None:
        channels = _static_channels(g.original_node.inputsAt(0))
    if channels is None:
        raise ValueError(
            "fastdw: ONNX Conv needs the depthwise conv's group count, the input's channel "
            "dimension, as a static int, and it is unknown here; export a traced model "
            "(torch.onnx.export traces an nn.Module itself) rather than a scripted one.")
    return channels


def _constant_like(g, value: float, like):
    dtype = torch.onnx.JitScalarType.from_value(like, torch.onnx.JitScalarType.FLOAT).dtype()
    return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))


def _conv(g, input, weight, bias, stride, padding, dilation, group):
    args = (input, weight) if symbolic_helper._is_none(bias) else (input, weight, bias)
    return g.op("Conv", *args, strides_i=stride, pads_i=list(padding) * 2,
                dilations_i=dilation, group_i=group)


def _activation(g, x, activation: str):
    if activation == "relu":
        return g.op("Relu", x)
    if activation == "relu6":
        if g.opset < 11:
            return g.op("Clip", x, min_f=0.0, max_f=6.0)
        return g.op("Clip", x, _constant_like(g, 0.0, x), _constant_like(g, 6.0, x))
    if activation == "gelu":
        erf = g.op("Erf", g.op("Div", x, _constant_like(g, math.sqrt(2.0), x)))
        half = g.op("Mul", _constant_like(g, 0.5, x),
                    g.op("Add", erf, _constant_like(g, 1.0, x)))
        return g.op("Mul", x, half)
    if activation == "none":
        return x
    raise ValueError(f"fastdw: no ONNX translation for activation {activation!r}")


@symbolic_helper.parse_args("v", "v", "v", "is", "is", "is")
def depthwise_conv2d(g, input, weight, bias, stride, padding, dilation):
    return _conv(g, input, weight, bias, stride, padding, dilation, _channels(g, input))


@symbolic_helper.parse_args("v", "v", "v", "v", "v", "is", "is", "is", "s")
def depthwise_separable_conv2d(g, input, dw_weight, dw_bias, pw_weight, pw_bias, stride,
                               padding, dilation, activation):
    mid = _conv(g, input, dw_weight, dw_bias, stride, padding, dilation, _channels(g, input))
    pw_weight = symbolic_helper._unsqueeze_helper(g, pw_weight, [2, 3])  # (C_out, C*m) -> 4-D
    return _conv(g, _activation(g, mid, activation), pw_weight, pw_bias, [1, 1], [0, 0],
                 [1, 1], 1)


def register() -> None:
    """Registers both symbolics for opsets >= ``MIN_OPSET`` (by name: the fused op need not
    exist yet)."""
    for name, fn in (("depthwise_conv2d", depthwise_conv2d),
                     ("depthwise_separable_conv2d", depthwise_separable_conv2d)):
        torch.onnx.register_custom_op_symbolic(f"fastdw::{name}", fn, MIN_OPSET)

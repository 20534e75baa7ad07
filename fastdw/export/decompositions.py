"""Decompositions of the fastdw ops into stock aten ops, for ``ExportedProgram.run_decompositions``.

    ep = torch.export.export(model, (x,))
    table = torch.export.default_decompositions()
    table.update(fastdw.export.decompositions())
    ep = ep.run_decompositions(table)   # no fastdw ops left: aten.convolution instead

The formulas are ``fastdw.reference``'s written with ``aten.convolution`` (what ``F.conv2d``
with ``groups=C`` lowers to; for the fused op: depthwise conv, the activation (PyTorch's own,
from fastdw.activations), 1x1 conv), so a lowered program computes what PyTorch's own layers compute, with or without the
default table. The table is not registered globally (in ``torch._decomp.decomposition_table``,
which the dynamo ONNX exporter reads): there, fake tensors with symbolic shapes would use it
in place of the ops' registered fake kernels, so ``torch.compile`` would see other strides and
checks. The ONNX exporter gets its own translations instead (``onnx_dynamo``).
"""
from __future__ import annotations

from typing import Callable, Dict

import torch

from ..activations import ACTIVATIONS

__all__ = ["decompositions"]


def _depthwise_conv2d(input, weight, bias, stride, padding, dilation):
    # F.conv2d(input, weight, bias, stride, padding, dilation, groups=C), at the aten level.
    return torch.ops.aten.convolution.default(input, weight, bias, stride, padding, dilation,
                                              False, [0, 0], input.shape[1])


def _depthwise_separable_conv2d(input, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding,
                                dilation, activation):
    mid = _depthwise_conv2d(input, dw_weight, dw_bias, stride, padding, dilation)
    mid = ACTIVATIONS[activation].apply(mid)
    # The op takes the pointwise weight as (C_out, C*m).
    return torch.ops.aten.convolution.default(mid, pw_weight[:, :, None, None], pw_bias, [1, 1],
                                              [0, 0], [1, 1], False, [0, 0], 1)


def registered_op(name: str):
    """``torch.ops.fastdw.<name>.default``, or None while the op is not registered (the fused
    op is registered when ``fastdw.triton`` is first imported)."""
    if not torch._C._dispatch_has_kernel(f"fastdw::{name}"):
        return None
    return getattr(torch.ops.fastdw, name).default


def decompositions() -> Dict[torch._ops.OpOverload, Callable]:
    """``{op: decomposition}`` for every fastdw forward op registered now:
    ``torch.ops.fastdw.depthwise_conv2d.default`` (to one ``aten.convolution`` with
    ``groups = C``) and, once ``fastdw.triton`` is imported, the fused
    ``torch.ops.fastdw.depthwise_separable_conv2d.default`` (to ``aten.convolution``, the
    activation -- ``relu``, ``hardtanh(0, 6)`` or exact ``gelu`` -- and a 1x1
    ``aten.convolution``). Pass it, merged into ``torch.export.default_decompositions()`` or
    alone, to ``ExportedProgram.run_decompositions``. The backward ops are not in the table:
    an exported inference program does not contain them."""
    table = {}
    for name, fn in (("depthwise_conv2d", _depthwise_conv2d),
                     ("depthwise_separable_conv2d", _depthwise_separable_conv2d)):
        op = registered_op(name)
        if op is not None:
            table[op] = fn
    return table

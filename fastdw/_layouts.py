"""Memory formats: which layout the kernels run in, and which one PyTorch hands back.

PyTorch's convolution (ATen ``mkldnn_conv_use_channels_last`` and
``thnn_conv_use_channels_last``, the same rule for cuDNN) returns a channels_last output, and
channels_last input gradients, when the input *or* the weight suggests channels_last; the
incoming gradient's layout does not matter. fastdw's kernels run in the layout of their first
tensor argument (``kernel_memory_format``, mirrored in csrc/depthwise_args.h), so the API puts
that argument in PyTorch's layout first (``as_conv_layout``) and the output follows.
"""
from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format as _suggest_memory_format


def _channels_last_strides(sizes, strides) -> bool:
    """ATen's is_channels_last_strides_2d_s4, which Tensor.suggest_memory_format() asks for a
    4-D tensor: strides ordered C < W < H < N, with NCHW as the answer for ambiguous ones."""
    if strides[1] == 0:
        return False
    least = 0
    for d in (1, 3, 2, 0):
        if sizes[d] == 0 or strides[d] < least or (d == 0 and least == strides[1]):
            return False
        least = strides[d] * (sizes[d] if sizes[d] > 1 else 1)
    return True


def kernel_memory_format(t: torch.Tensor) -> torch.memory_format:
    """The layout a kernel runs ``t`` in: channels_last when ``t.suggest_memory_format()`` is,
    else NCHW. Mirrors kernel_memory_format() in csrc/depthwise_args.h. Plain Python ints here
    (torch._prims_common's version, used for symbolic shapes, costs ~10 us a call)."""
    if t.dim() != 4 or t.layout != torch.strided:
        return torch.contiguous_format
    sizes, strides = t.shape, t.stride()
    if torch.jit.is_tracing():  # the tracer hands sizes back as tensors; a trace fixes them anyway
        sizes, strides = tuple(int(v) for v in sizes), tuple(int(v) for v in strides)
    if not all(type(v) is int for v in (*sizes, *strides)):
        return _suggest_memory_format(t)
    return torch.channels_last if _channels_last_strides(sizes, strides) else \
        torch.contiguous_format


def conv_memory_format(*tensors: torch.Tensor) -> torch.memory_format:
    """PyTorch's layout for a convolution of these (input, weight[, pointwise weight]) tensors:
    channels_last when any of them suggests channels_last."""
    if any(t is not None and t.dim() == 4 and kernel_memory_format(t) == torch.channels_last
           for t in tensors):
        return torch.channels_last
    return torch.contiguous_format


def as_layout(t: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """``t`` such that a kernel runs it in ``memory_format`` (no copy when it already does).
    ``contiguous`` is not enough: a tensor with size-1 dimensions can be channels_last-contiguous
    while its strides suggest NCHW (a grad_output unsqueezed from an unbatched one), so a copy
    gets the format's own strides. Under torch.vmap per-sample strides mean nothing and are
    left alone."""
    if torch._C._functorch.is_batchedtensor(t) or kernel_memory_format(t) == memory_format:
        return t
    return t.clone(memory_format=memory_format)


def as_conv_layout(input: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
    """``input`` in PyTorch's layout for its convolution with ``weights`` (channels_last when
    any of them is), so that a kernel running in the input's layout returns what F.conv2d
    returns."""
    if torch._C._functorch.is_batchedtensor(input) or conv_memory_format(*weights) != \
            torch.channels_last:
        return input
    return as_layout(input, torch.channels_last)

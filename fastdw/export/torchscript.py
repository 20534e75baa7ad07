"""TorchScript forms of the ``fastdw.nn`` forwards, used while scripting or tracing.

``torch.jit.script`` cannot compile the Python call path of ``fastdw.depthwise_conv2d``
(argument normalisation, autocast, backend choice), and ``torch.jit.trace`` must record the
registered op itself: a Python ``autograd.Function`` on the way would be recorded as a
``prim::PythonOp`` that ``torch.jit.save`` and ``torch.onnx.export`` cannot handle. So while
scripting or tracing, the modules call these functions instead. They take the module's
attributes (already validated by ``nn.Conv2d``'s constructor), resolve ``padding`` as
``F.conv2d`` does, and call ``torch.ops.fastdw.depthwise_conv2d`` directly; a scripted or traced
model therefore holds only ``fastdw::depthwise_conv2d`` and stock aten ops, and runs wherever
the fastdw library is loaded (Python, or C++ after loading the library; see
``fastdw.export.library_path``).

The separable module takes the composed path here (depthwise op, activation, 1x1
``F.conv2d``), never the fused Triton op, which exists only in Python.

Not done on these paths: autocast casts in a scripted module (the modules' autocast rule,
``fastdw.nn._autocast``, is eager Python; a trace under autocast records the casts it made),
and the eager argument checks that ``nn.Conv2d``'s constructor and the op's own C++ checks
already cover.
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = ["depthwise_conv2d", "depthwise_separable_conv2d", "resolve_padding"]


def resolve_padding(padding: Union[str, Tuple[int, int]], kernel_size: Tuple[int, int],
                    dilation: Tuple[int, int]) -> List[int]:
    """``[pad_h, pad_w, extra_h, extra_w]``: symmetric padding, plus the extra bottom/right
    padding that ``padding='same'`` needs when ``dilation * (k - 1)`` is odd (PyTorch pads one
    more after than before; ``torch.nn.functional.conv2d`` docs, ``_convolution_mode``)."""
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0, 0, 0]
        if padding != "same":
            raise ValueError("fastdw: padding must be an int, a pair, 'same' or 'valid', got "
                             + padding)
        total_h = dilation[0] * (kernel_size[0] - 1)
        total_w = dilation[1] * (kernel_size[1] - 1)
        return [total_h // 2, total_w // 2, total_h % 2, total_w % 2]
    return [padding[0], padding[1], 0, 0]


def _input_channels(input: torch.Tensor) -> int:
    if torch.jit.is_scripting():
        return input.shape[-3]
    # While tracing, the size is a traced value and comparing it warns that the trace will not
    # keep the check; it does not (a trace keeps no Python checks), the op's own check stays.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return int(input.shape[-3])


def _check_input(input: torch.Tensor, in_channels: int, module: str) -> None:
    if input.dim() != 3 and input.dim() != 4:
        raise ValueError(f"fastdw: {module} expects a 3-D (C, H, W) or 4-D (N, C, H, W) input, "
                         f"got {input.dim()}-D")
    channels = _input_channels(input)
    if channels != in_channels:
        raise ValueError(f"fastdw: {module} expects {in_channels} input channels, got "
                         f"{channels}")


def depthwise_conv2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                     in_channels: int, kernel_size: Tuple[int, int], stride: Tuple[int, int],
                     padding: Union[str, Tuple[int, int]], dilation: Tuple[int, int],
                     padding_mode: str = "zeros",
                     reversed_padding: Optional[List[int]] = None) -> torch.Tensor:
    """``DepthwiseConv2d``'s forward: ``nn.Conv2d(..., groups=in_channels)`` on
    ``fastdw::depthwise_conv2d``. ``input`` is (N, C, H, W) or (C, H, W); the other arguments
    are the module's attributes (``kernel_size`` too, not ``weight.shape``: a trace keeps
    attributes as constants but records shape reads as ops), ``reversed_padding`` its
    ``_reversed_padding_repeated_twice``. Raises ValueError on a wrong input rank or channel
    count (the op raises RuntimeError on the rest)."""
    _check_input(input, in_channels, "DepthwiseConv2d")
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    if padding_mode != "zeros":
        assert reversed_padding is not None
        input = F.pad(input, reversed_padding, mode=padding_mode)
        pads = [0, 0, 0, 0]
    else:
        pads = resolve_padding(padding, kernel_size, dilation)
    if pads[2] != 0 or pads[3] != 0:
        input = F.pad(input, [0, pads[3], 0, pads[2]])
    out = torch.ops.fastdw.depthwise_conv2d(input, weight, bias, [stride[0], stride[1]],
                                            [pads[0], pads[1]], [dilation[0], dilation[1]])
    return out.squeeze(0) if unbatched else out


def _activation(input: torch.Tensor, activation: Optional[str]) -> torch.Tensor:
    # The TorchScript form of fastdw.reference.ACTIVATIONS (TorchScript has no dict of
    # functions).
    if activation is None or activation == "none":
        return input
    if activation == "relu":
        return F.relu(input)
    if activation == "relu6":
        return F.relu6(input)
    if activation == "gelu":
        return F.gelu(input)
    raise ValueError("fastdw: unknown activation " + activation)


def depthwise_separable_conv2d(input: torch.Tensor, dw_weight: torch.Tensor,
                               dw_bias: Optional[torch.Tensor], pw_weight: torch.Tensor,
                               pw_bias: Optional[torch.Tensor], in_channels: int,
                               kernel_size: Tuple[int, int], stride: Tuple[int, int],
                               padding: Union[str, Tuple[int, int]],
                               dilation: Tuple[int, int],
                               activation: Optional[str]) -> torch.Tensor:
    """``DepthwiseSeparableConv2d``'s forward on the composed path: ``fastdw::depthwise_conv2d``,
    the activation, then ``F.conv2d`` with ``pw_weight`` (C_out, C*m, 1, 1)."""
    _check_input(input, in_channels, "DepthwiseSeparableConv2d")
    mid = depthwise_conv2d(input, dw_weight, dw_bias, in_channels, kernel_size, stride, padding,
                           dilation)
    return F.conv2d(_activation(mid, activation), pw_weight, pw_bias)

"""``fastdw.depthwise_separable_conv2d``: depthwise conv, activation, pointwise (1x1) conv.

Two paths, chosen by ``backend_for`` (which asks ``fastdw.backends.separable_backend``):
  * ``triton``: the fused Triton kernels (fastdw/triton), on GPU or under TRITON_INTERPRET=1,
    for depth multiplier 1 and float32/float16/bfloat16;
  * ``composed``: ``fastdw.depthwise_conv2d`` + activation + ``F.conv2d`` 1x1, everywhere else.
Only the composed path supports double backward, forward-mode AD and torch.func: while either
is active, ``backend_for`` picks it (the fused kernels have reverse-mode autograd only).
The output has PyTorch's layout for the composed convolutions: channels_last when the input or
either weight is channels_last.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from . import _args
from .backends import separable_backend
from ._autograd import transforms_active
from ._layouts import as_conv_layout, as_layout, conv_memory_format
from .activations import ACTIVATIONS, activation_name
from .errors import ArgumentError


def _pointwise_args(input, channels, pw_weight, pw_bias) -> torch.Tensor:
    """Validates the pointwise weight and bias for ``channels`` (= C*m) depthwise outputs;
    returns the weight as a (C_out, C_in) view."""
    _args.check_tensor(pw_weight, "pw_weight")
    _args.check_same(input, "input", pw_weight, "pw_weight")
    shape = tuple(pw_weight.shape)
    if not ((len(shape) == 4 and shape[2:] == (1, 1) or len(shape) == 2)
            and shape[0] > 0 and shape[1] == channels):
        raise ArgumentError(f"fastdw: pw_weight must have shape (C_out, {channels}, 1, 1) or "
                         f"(C_out, {channels}) for the {channels} depthwise output channels, "
                         f"got {shape}")
    if pw_bias is not None:
        _args.check_tensor(pw_bias, "pw_bias")
        _args.check_same(input, "input", pw_bias, "pw_bias")
        if tuple(pw_bias.shape) != (shape[0],):
            raise ArgumentError(f"fastdw: pw_bias must have shape ({shape[0]},), "
                             f"got {tuple(pw_bias.shape)}")
    return pw_weight.reshape(shape[0], shape[1])


def backend_for(input: torch.Tensor, dw_weight: torch.Tensor) -> Tuple[str, str]:
    """The path ``depthwise_separable_conv2d`` takes for these (validated) tensors:
    ('triton' | 'composed', why)."""
    if not torch.compiler.is_compiling() and transforms_active():
        return "composed", ("forward-mode AD or a torch.func transform is active (the fused "
                            "kernel has reverse-mode autograd only); using fastdw depthwise + "
                            "1x1 conv")
    backend, why = separable_backend(input.device)
    if backend == "triton":
        from .triton import unsupported_reason
        reason = unsupported_reason(input, dw_weight)
        if reason is not None:
            return "composed", reason + "; using fastdw depthwise + 1x1 conv"
    return backend, why


def _composed(input, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation,
              activation):
    mid = torch.ops.fastdw.depthwise_conv2d(input, dw_weight, dw_bias, list(stride),
                                            list(padding), list(dilation))
    mid = ACTIVATIONS[activation].apply(mid)
    return F.conv2d(mid, pw_weight[:, :, None, None], pw_bias)


def depthwise_separable_conv2d(input: torch.Tensor, dw_weight: torch.Tensor,
                               dw_bias: Optional[torch.Tensor], pw_weight: torch.Tensor,
                               pw_bias: Optional[torch.Tensor], stride=1, padding=0, dilation=1,
                               activation: Optional[str] = None) -> torch.Tensor:
    """``pw(act(dw(input) + dw_bias)) + pw_bias`` with autograd: exactly
    ``F.conv2d(act(F.conv2d(input, dw_weight, dw_bias, stride, padding, dilation, groups=C)),
    pw_weight, pw_bias)``.

    Args:
        input: (N, C, H, W) or unbatched (C, H, W); NCHW or channels_last. The output is
            channels_last when the input or either weight is (as F.conv2d's would be).
        dw_weight: (C*m, 1, kh, kw) depthwise weight (the fused kernel needs m = 1), any kh, kw.
        dw_bias: (C*m,) or None.
        pw_weight: (C_out, C*m, 1, 1) or (C_out, C*m) pointwise weight.
        pw_bias: (C_out,) or None.
        stride, padding, dilation: of the depthwise conv, as in ``fastdw.depthwise_conv2d``
            (padding may be 'same' or 'valid').
        activation: None, 'none', 'relu', 'relu6' or 'gelu' (exact, erf-based).

    On GPU (or under TRITON_INTERPRET=1) float32/float16/bfloat16 inputs with m = 1 run the fused
    Triton kernel; everything else runs the composed path. See ``backend_for``.
    """
    unbatched = isinstance(input, torch.Tensor) and input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    try:
        stride, padding, dilation, extra = _args.conv_args(input, dw_weight, dw_bias, stride,
                                                           padding, dilation)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{e} (in depthwise_separable_conv2d, 'weight' is dw_weight and 'bias' is "
                      "dw_bias)") from None
    pw_matrix = _pointwise_args(input, dw_weight.shape[0], pw_weight, pw_bias)
    layout = conv_memory_format(input, dw_weight, pw_weight)
    activation = activation_name(activation)
    if extra != (0, 0):
        # padding='same' with an even effective kernel: PyTorch pads one more after.
        input = F.pad(input, (0, extra[1], 0, extra[0]))
    input = as_conv_layout(input, dw_weight)
    args = (input, dw_weight, dw_bias, pw_matrix, pw_bias, list(stride), list(padding),
            list(dilation), activation)
    if backend_for(input, dw_weight)[0] == "triton":
        out = torch.ops.fastdw.depthwise_separable_conv2d(*args)
    else:
        out = _composed(*args)
    out = as_layout(out, layout)
    return out.squeeze(0) if unbatched else out

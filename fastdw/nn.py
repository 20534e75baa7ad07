"""Drop-in modules: ``DepthwiseConv2d`` (an ``nn.Conv2d`` with groups == in_channels) and
``DepthwiseSeparableConv2d`` (depthwise, optional activation, 1x1 pointwise, on the fused op).

Both go through the public functional API only (``fastdw.depthwise_conv2d`` and
``fastdw.depthwise_separable_conv2d``), never through the compiled library directly.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _args, activations, geometry
from .errors import ArgumentError
from .export import torchscript as _torchscript
from .ops import depthwise_conv2d
from .separable import depthwise_separable_conv2d as _separable

__all__ = ["DepthwiseConv2d", "DepthwiseSeparableConv2d", "SEPARABLE_ACTIVATIONS"]

#: Activations the fused separable op applies between the depthwise and the pointwise conv.
SEPARABLE_ACTIVATIONS = (None,) + tuple(n for n in activations.NAMES if n != "none")


def _autocast(*tensors: Optional[torch.Tensor]):
    """Casts the way autocast casts the inputs of ``F.conv2d`` (a "lower precision" op on CPU
    and CUDA): when autocast is enabled for the tensors' device type, every floating tensor
    except float64 goes to the autocast dtype. A custom op gets no autocast kernel of its own
    that follows the *current* autocast dtype (``torch.library.register_autocast`` fixes one
    dtype), so the modules cast here; autograd sees the casts, as it sees autocast's."""
    device_type = tensors[0].device.type
    if not (torch.amp.is_autocast_available(device_type)
            and torch.is_autocast_enabled(device_type)):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(
        t.to(dtype) if t is not None and t.is_floating_point() and t.dtype != torch.float64
        else t for t in tensors)


def _check_channels(module: nn.Module, input: torch.Tensor, channels: int) -> None:
    # nn.Conv2d rejects a wrong channel count; the functional op would instead read a weight of
    # C*m filters as a depth multiplier for any divisor of C*m, so the module checks. The
    # exception types are nn.Conv2d's (TypeError; RuntimeError, which ArgumentError also is).
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"fastdw: {type(module).__name__} expects a torch.Tensor input, "
                        f"got {type(input).__name__}")
    if input.dim() not in (3, 4):
        raise ArgumentError(f"fastdw: {type(module).__name__} expects a 3-D (C, H, W) or "
                                  f"4-D (N, C, H, W) input, got shape {tuple(input.shape)}")
    if input.shape[-3] != channels:
        raise ArgumentError(f"fastdw: {type(module).__name__} expects {channels} input "
                                  f"channels, got input of shape {tuple(input.shape)}")


def _has_kernel_for(device: torch.device) -> bool:
    key = {"cpu": "CPU", "cuda": "CUDA", "meta": "Meta"}.get(device.type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(
        "fastdw::depthwise_conv2d", key)


def depthwise_mismatch(conv: nn.Module) -> Optional[str]:
    """Why ``conv`` cannot become a ``DepthwiseConv2d`` (a short reason), or None if it can.

    Only exact ``nn.Conv2d`` instances qualify: a subclass may override ``forward``, hooks and
    parametrizations (weight norm, spectral norm...) would be lost by a new module.
    """
    if isinstance(conv, (DepthwiseConv2d, DepthwiseSeparableConv2d)):
        return "already a fastdw module"
    if isinstance(conv, nn.modules.lazy.LazyModuleMixin) and conv.has_uninitialized_params():
        return "lazy module not initialised yet (run one forward first)"
    if isinstance(conv, nn.modules.conv._ConvTransposeNd):
        return "transposed convolution (fastdw has no transposed depthwise op)"
    if not isinstance(conv, nn.Conv2d):
        return f"{type(conv).__name__}: only 2-D convolutions are supported"
    if torch.nn.utils.parametrize.is_parametrized(conv):
        return "parametrized (torch.nn.utils.parametrize); the parametrization would be lost"
    if type(conv) is not nn.Conv2d:
        return f"subclass {type(conv).__qualname__} of nn.Conv2d may change forward"
    if conv.groups != conv.in_channels:
        kind = "dense" if conv.groups == 1 else "grouped but not depthwise"
        return f"{kind} (groups={conv.groups}, in_channels={conv.in_channels})"
    if not isinstance(conv.weight, nn.Parameter):
        return "weight is not a Parameter (weight norm or similar reparametrization)"
    if conv.weight.dtype not in _args._FLOAT_DTYPES:
        return f"weight dtype {conv.weight.dtype} is not supported"
    if not _has_kernel_for(conv.weight.device):
        return f"this fastdw build has no kernel for {conv.weight.device.type} tensors"
    try:  # what nn.Conv2d stored must be what fastdw takes, or the new module would fail
        geometry.normalize(tuple(conv.kernel_size), conv.stride,
                       conv.padding if conv.padding_mode == "zeros" else 0, conv.dilation)
    except (TypeError, ValueError) as e:
        return f"stride/padding/dilation not accepted: {e}"
    if any((conv._forward_hooks, conv._forward_pre_hooks, conv._backward_hooks,
            conv._backward_pre_hooks)):
        return "has forward/backward hooks that a new module would not carry"
    return None


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(in_channels, out_channels, ..., groups=in_channels)`` on fastdw's kernels.

    Same constructor, attributes, parameter names and shapes as ``nn.Conv2d``, so a state_dict
    loads both ways with ``nn.Conv2d(..., groups=in_channels)``, and the default initialisation
    draws the same numbers from the same seed. ``out_channels`` must be a multiple of
    ``in_channels`` (the depth multiplier). ``groups`` may be passed but must equal
    ``in_channels``; it is fixed. All four padding modes work: non-``'zeros'`` modes pad with
    ``F.pad`` and convolve with padding 0, exactly as ``nn.Conv2d`` does. Unbatched (C, H, W)
    input works. Under ``torch.autocast`` (CPU or CUDA) the input, weight and bias are cast to
    the autocast dtype as ``nn.Conv2d``'s are.

    Why a subclass of ``nn.Conv2d``: code written for stock models keeps working on converted
    ones -- ``isinstance(m, nn.Conv2d)`` loops for weight init, optimizer parameter groups
    (e.g. no weight decay on depthwise convs), pruning, ``fuse_conv_bn_eval``, FLOP counters,
    and anything reading ``kernel_size``/``stride``/``groups``. The only behaviour overridden is
    ``_conv_forward`` (the kernel call); everything else -- ``reset_parameters``,
    ``extra_repr``, state_dict handling -- is ``nn.Conv2d``'s. Code that dispatches on the exact
    type (``type(m) is nn.Conv2d``, as torch.ao quantization mappings do) will not treat it as
    a Conv2d; convert back with ``to_conv()`` first.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 kernel_size: Union[int, Tuple[int, int]],
                 stride: Union[int, Tuple[int, int]] = 1,
                 padding: Union[str, int, Tuple[int, int]] = 0,
                 dilation: Union[int, Tuple[int, int]] = 1,
                 groups: Optional[int] = None, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None) -> None:
        if not isinstance(in_channels, int) or in_channels <= 0:
            raise ValueError(f"fastdw: in_channels must be a positive int, got {in_channels!r}")
        if groups is not None and groups != in_channels:
            raise ValueError(f"fastdw: DepthwiseConv2d has groups == in_channels ({in_channels}),"
                             f" got groups={groups}")
        if not isinstance(out_channels, int) or out_channels <= 0 \
                or out_channels % in_channels != 0:
            raise ValueError(f"fastdw: out_channels must be a positive multiple of in_channels "
                             f"({in_channels}), got {out_channels!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups=in_channels, bias=bias, padding_mode=padding_mode,
                         device=device, dtype=dtype)

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor,
                      bias: Optional[torch.Tensor]) -> torch.Tensor:
        if torch.jit.is_scripting() or torch.jit.is_tracing():
            # TorchScript cannot compile the eager path below, and a trace must record the op.
            if not torch.jit.is_scripting():
                input, weight, bias = _autocast(input, weight, bias)
            return _torchscript.depthwise_conv2d(
                input, weight, bias, self.in_channels, self.kernel_size, self.stride,
                self.padding, self.dilation, self.padding_mode,
                self._reversed_padding_repeated_twice)
        _check_channels(self, input, self.in_channels)
        padding = self.padding
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        input, weight, bias = _autocast(input, weight, bias)
        return depthwise_conv2d(input, weight, bias, self.stride, padding, self.dilation)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "DepthwiseConv2d":
        """A ``DepthwiseConv2d`` computing what ``conv`` (an ``nn.Conv2d`` with groups ==
        in_channels) computes. It *shares* conv's Parameter objects -- so requires_grad,
        device, dtype and an optimizer holding them carry over -- and copies its train/eval
        mode. ``copy.deepcopy(conv)`` first if independent parameters are wanted."""
        reason = depthwise_mismatch(conv)
        if reason is not None:
            raise ValueError(f"fastdw: cannot convert {conv!r} to DepthwiseConv2d: {reason}")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                  conv.padding, conv.dilation, bias=conv.bias is not None,
                  padding_mode=conv.padding_mode, device="meta", dtype=conv.weight.dtype)
        new.weight = conv.weight
        if conv.bias is not None:
            new.bias = conv.bias
        new.train(conv.training)
        return new

    def to_conv(self) -> nn.Conv2d:
        """The stock ``nn.Conv2d(..., groups=in_channels)``, sharing this module's parameters."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                         self.padding, self.dilation, groups=self.in_channels,
                         bias=self.bias is not None, padding_mode=self.padding_mode,
                         device="meta", dtype=self.weight.dtype)
        conv.weight = self.weight
        if self.bias is not None:
            conv.bias = self.bias
        conv.train(self.training)
        return conv


def _activation_name(activation) -> Optional[str]:
    """The module's ``activation`` attribute: None for the identity, else the registry name."""
    name = activations.activation_name(activation)
    return None if name == "none" else name


class DepthwiseSeparableConv2d(nn.Module):
    """Depthwise conv (``kernel_size``, ``stride``, ``padding``, ``dilation``), optional
    activation (``None``, ``'relu'``, ``'relu6'``, ``'gelu'``), then a 1x1 pointwise conv to
    ``out_channels``: one call to the fused ``fastdw.depthwise_separable_conv2d``.

    Parameters live in two submodules, ``depthwise`` (a ``DepthwiseConv2d``, weight
    (C*m, 1, kh, kw)) and ``pointwise`` (an ``nn.Conv2d``, weight (C_out, C*m, 1, 1)), so the
    state_dict keys are ``depthwise.weight``, ``pointwise.weight`` (and biases) and match an
    ``nn.Sequential(OrderedDict(depthwise=..., pointwise=...))`` of stock convs. The submodules
    hold parameters; their own forward is not used.

    ``bias`` is a bool for both convs or a pair ``(depthwise_bias, pointwise_bias)``.
    ``depth_multiplier`` m gives the depthwise conv C*m output channels. ``padding`` may be an
    int, a pair, ``'same'`` or ``'valid'`` (zero padding only). Unbatched input and autocast
    work as for ``DepthwiseConv2d``.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 kernel_size: Union[int, Tuple[int, int]],
                 stride: Union[int, Tuple[int, int]] = 1,
                 padding: Union[str, int, Tuple[int, int]] = 0,
                 dilation: Union[int, Tuple[int, int]] = 1,
                 bias: Union[bool, Tuple[bool, bool]] = True,
                 activation: Optional[str] = None, *, depth_multiplier: int = 1,
                 device=None, dtype=None) -> None:
        super().__init__()
        dw_bias, pw_bias = (bias, bias) if isinstance(bias, bool) else tuple(bias)
        if not isinstance(depth_multiplier, int) or depth_multiplier <= 0:
            raise ValueError(f"fastdw: depth_multiplier must be a positive int, "
                             f"got {depth_multiplier!r}")
        mid = in_channels * depth_multiplier
        self.activation = _activation_name(activation)
        self.depthwise = DepthwiseConv2d(in_channels, mid, kernel_size, stride, padding,
                                         dilation, bias=dw_bias, device=device, dtype=dtype)
        self.pointwise = nn.Conv2d(mid, out_channels, 1, bias=pw_bias, device=device,
                                   dtype=dtype)

    @property
    def in_channels(self) -> int:
        return self.depthwise.in_channels

    @property
    def out_channels(self) -> int:
        return self.pointwise.out_channels

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dw, pw = self.depthwise, self.pointwise
        if torch.jit.is_scripting() or torch.jit.is_tracing():
            # As in DepthwiseConv2d; the trace records the composed path, which runs without
            # Python (the fused Triton op does not). TorchScript sees a submodule's constants
            # (in_channels, stride...) only through self.
            dw_w, dw_b, pw_w, pw_b = dw.weight, dw.bias, pw.weight, pw.bias
            if not torch.jit.is_scripting():
                input, dw_w, dw_b, pw_w, pw_b = _autocast(input, dw_w, dw_b, pw_w, pw_b)
            return _torchscript.depthwise_separable_conv2d(
                input, dw_w, dw_b, pw_w, pw_b, self.depthwise.in_channels,
                self.depthwise.kernel_size, self.depthwise.stride, self.depthwise.padding,
                self.depthwise.dilation, self.activation)
        _check_channels(self, input, dw.in_channels)
        input, dw_w, dw_b, pw_w, pw_b = _autocast(input, dw.weight, dw.bias, pw.weight, pw.bias)
        return _separable(input, dw_w, dw_b, pw_w, pw_b, dw.stride, dw.padding, dw.dilation,
                          self.activation)

    @classmethod
    def from_modules(cls, depthwise: nn.Conv2d, pointwise: nn.Conv2d,
                     activation: Optional[str] = None) -> "DepthwiseSeparableConv2d":
        """Wraps an existing depthwise conv (``nn.Conv2d`` with groups == in_channels, zero
        padding) and 1x1 ``pointwise`` conv (groups=1, stride 1, no padding), sharing their
        parameters, with ``activation`` between them."""
        reason = separable_mismatch(depthwise, pointwise)
        if reason is not None:
            raise ValueError(f"fastdw: cannot build a DepthwiseSeparableConv2d: {reason}")
        if not isinstance(depthwise, DepthwiseConv2d):
            depthwise = DepthwiseConv2d.from_conv(depthwise)
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.activation = _activation_name(activation)
        new.depthwise = depthwise
        new.pointwise = pointwise
        new.train(depthwise.training)
        return new


def separable_mismatch(depthwise: nn.Module, pointwise: nn.Module) -> Optional[str]:
    """Why ``depthwise`` followed by ``pointwise`` cannot be one fused separable conv, or None."""
    if not isinstance(depthwise, DepthwiseConv2d):
        reason = depthwise_mismatch(depthwise)
        if reason is not None:
            return f"first conv: {reason}"
    if depthwise.padding_mode != "zeros":
        return f"depthwise padding_mode={depthwise.padding_mode!r} (fused op pads with zeros)"
    if type(pointwise) is not nn.Conv2d:
        return f"second module is {type(pointwise).__name__}, not an nn.Conv2d"
    if pointwise.kernel_size != (1, 1) or pointwise.stride != (1, 1) or pointwise.groups != 1 \
            or pointwise.padding not in ((0, 0), "valid", "same"):
        return (f"second conv is not pointwise (kernel {pointwise.kernel_size}, stride "
                f"{pointwise.stride}, padding {pointwise.padding}, groups {pointwise.groups})")
    if pointwise.in_channels != depthwise.out_channels:
        return (f"channel mismatch ({depthwise.out_channels} -> pointwise in_channels "
                f"{pointwise.in_channels})")
    if any((pointwise._forward_hooks, pointwise._forward_pre_hooks, pointwise._backward_hooks,
            pointwise._backward_pre_hooks)) or not isinstance(pointwise.weight, nn.Parameter) \
            or torch.nn.utils.parametrize.is_parametrized(pointwise):
        return "pointwise conv has hooks or a reparametrized weight"
    if (pointwise.weight.dtype, pointwise.weight.device) != \
            (depthwise.weight.dtype, depthwise.weight.device):
        return "depthwise and pointwise weights differ in dtype or device"
    return None

"""Autograd for the three fastdw ops: reverse mode (gradients of any order), forward mode
(``torch.autograd.forward_ad``, ``torch.func.jvp``) and the other torch.func transforms.

The convolution is bilinear (formulas as in ATen's ``convolution_backward`` and
``convolution_jvp``, derivatives.yaml):

    forward          y       = F(x, w) + b
    backward-input   gx      = Bx(gy, w)      linear in gy and in w
    backward-weight  gw, gb  = Bw(gy, x)      linear in gy and in x; gb = sum of gy

so each op's jvp is the sum of two calls of the same op, and each op's backward calls the
other two. All of these calls go through the dispatcher, so every derivative of any order is
again these ops, with these formulas.

Each op gets a ``torch.autograd.Function`` (``setup_context`` style, ``backward``, ``jvp``;
vmap goes through the ops' batching rules, fastdw/_vmap.py) registered as its Autograd kernel.
``torch.library.register_autograd`` is not used: the Function it generates has no jvp (a forward-mode tangent was silently dropped)
and a forward that takes ``ctx``, which torch.func rejects. Being the op's kernel rather than
a Python call in the API keeps ``torch.compile`` (which cannot trace a Function with a custom
jvp), ``torch.export`` and ``opcheck`` seeing the op itself. With no gradient of any kind
wanted, the kernel goes straight to the device kernel.
"""
from __future__ import annotations

import contextlib

import torch
from torch._functorch.utils import enable_single_level_autograd_function
from torch.autograd import forward_ad
from torch.autograd.function import _SingleLevelFunction

from ._layouts import as_layout, kernel_memory_format

_ops = torch.ops.fastdw


def transforms_active() -> bool:
    """True while forward-mode AD (a dual level) or a torch.func transform is active, where
    every op call must go through its autograd.Function."""
    return (torch._C._are_functorch_transforms_active()
            or (forward_ad._current_level >= 0 and torch._C._is_fwd_grad_enabled()))


def _needs_autograd(args) -> bool:
    return transforms_active() or (torch.is_grad_enabled() and any(
        isinstance(a, torch.Tensor) and a.requires_grad for a in args))


def add_optional(a, b):
    """a + b, where None stands for a zero tangent or gradient."""
    return b if a is None else (a if b is None else a + b)


@contextlib.contextmanager
def _below_autograd():
    """Runs a Function's forward below this level's autograd. Under torch.func the call then
    goes on to the lower transform levels (a jvp or grad around this one), which must see it
    with their gradient modes on, as functorch's own single-level Functions run theirs."""
    with torch._C._AutoDispatchBelowAutograd():
        if torch._C._are_functorch_transforms_active():
            with torch.enable_grad(), forward_ad._set_fwd_grad_enabled(True):
                yield
        else:
            yield


def call_below_autograd(op, *args):
    with _below_autograd():
        return op(*args)


def _save(ctx, tensors, conv):
    """The two tensor arguments, for backward and jvp; (stride, padding, dilation). Unused
    gradients arrive as None, not as zeros."""
    ctx.save_for_backward(*tensors)
    ctx.save_for_forward(*tensors)
    ctx.conv = conv
    ctx.set_materialize_grads(False)


class Conv(_SingleLevelFunction):
    """y = F(x, w) + b: ``fastdw::depthwise_conv2d``."""

    @staticmethod
    def forward(input, weight, bias, stride, padding, dilation):
        return call_below_autograd(_ops.depthwise_conv2d, input, weight, bias, stride, padding,
                                    dilation)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, *conv = inputs
        _save(ctx, (input, weight), conv)
        ctx.has_bias = bias is not None
        ctx.output_shape = output.shape

    @staticmethod
    def backward(ctx, grad):
        input, weight = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_input = grad_weight = grad_bias = None
        if grad is None:
            return None, None, None, None, None, None
        if need_input:
            # grad_input in the layout of the convolution (PyTorch's), whatever grad's layout.
            grad_input = _ops.depthwise_conv2d_backward_input(
                as_layout(grad, kernel_memory_format(input)), weight, list(input.shape),
                *ctx.conv)
        if need_weight or (need_bias and ctx.has_bias):
            gw, gb = _ops.depthwise_conv2d_backward_weight(grad, input, list(weight.shape),
                                                           *ctx.conv)
            grad_weight = gw if need_weight else None
            grad_bias = gb if need_bias and ctx.has_bias else None
        return grad_input, grad_weight, grad_bias, None, None, None

    @staticmethod
    def jvp(ctx, t_input, t_weight, t_bias, *_):
        input, weight = ctx.saved_tensors
        out = None
        if t_input is not None:
            out = _ops.depthwise_conv2d(t_input, weight, None, *ctx.conv)
        if t_weight is not None:
            out = add_optional(out, _ops.depthwise_conv2d(input, t_weight, None, *ctx.conv))
        if t_bias is not None:
            t_bias = t_bias.view(1, -1, 1, 1)
            out = t_bias.expand(ctx.output_shape).clone() if out is None else out + t_bias
        return out


class BackwardInput(_SingleLevelFunction):
    """gx = Bx(gy, w): ``fastdw::depthwise_conv2d_backward_input``."""

    @staticmethod
    def forward(grad_output, weight, input_size, stride, padding, dilation):
        return call_below_autograd(_ops.depthwise_conv2d_backward_input, grad_output, weight,
                                    input_size, stride, padding, dilation)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_output, weight, input_size, *conv = inputs
        _save(ctx, (grad_output, weight), conv)
        ctx.input_size = list(input_size)

    @staticmethod
    def backward(ctx, v):
        grad_output, weight = ctx.saved_tensors
        d_grad_output = d_weight = None
        if v is not None and ctx.needs_input_grad[0]:
            d_grad_output = _ops.depthwise_conv2d(v, weight, None, *ctx.conv)
        if v is not None and ctx.needs_input_grad[1]:
            d_weight, _ = _ops.depthwise_conv2d_backward_weight(grad_output, v, list(weight.shape),
                                                               *ctx.conv)
        return d_grad_output, d_weight, None, None, None, None

    @staticmethod
    def jvp(ctx, t_grad_output, t_weight, *_):
        grad_output, weight = ctx.saved_tensors
        out = None
        if t_grad_output is not None:
            out = _ops.depthwise_conv2d_backward_input(t_grad_output, weight, ctx.input_size,
                                                       *ctx.conv)
        if t_weight is not None:
            out = add_optional(out, _ops.depthwise_conv2d_backward_input(grad_output, t_weight,
                                                                 ctx.input_size, *ctx.conv))
        return out


class BackwardWeight(_SingleLevelFunction):
    """(gw, gb) = Bw(gy, x): ``fastdw::depthwise_conv2d_backward_weight``."""

    @staticmethod
    def forward(grad_output, input, weight_size, stride, padding, dilation):
        return call_below_autograd(_ops.depthwise_conv2d_backward_weight, grad_output, input,
                                    weight_size, stride, padding, dilation)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_output, input, weight_size, *conv = inputs
        _save(ctx, (grad_output, input), conv)
        ctx.weight_size = list(weight_size)

    @staticmethod
    def backward(ctx, u, u_bias):
        grad_output, input = ctx.saved_tensors
        d_grad_output = d_input = None
        if ctx.needs_input_grad[0] and (u is not None or u_bias is not None):
            if u is None:  # only grad_bias was used downstream: d(sum gy)/d gy
                d_grad_output = u_bias.view(1, -1, 1, 1).expand(grad_output.shape).clone()
            else:
                d_grad_output = _ops.depthwise_conv2d(input, u, u_bias, *ctx.conv)
        if ctx.needs_input_grad[1] and u is not None:
            d_input = _ops.depthwise_conv2d_backward_input(grad_output, u, list(input.shape),
                                                          *ctx.conv)
        return d_grad_output, d_input, None, None, None, None

    @staticmethod
    def jvp(ctx, t_grad_output, t_input, *_):
        grad_output, input = ctx.saved_tensors
        gw = gb = None
        if t_grad_output is not None:
            gw, gb = _ops.depthwise_conv2d_backward_weight(t_grad_output, input, ctx.weight_size,
                                                           *ctx.conv)
        if t_input is not None:
            gw = add_optional(gw, _ops.depthwise_conv2d_backward_weight(grad_output, t_input,
                                                                ctx.weight_size, *ctx.conv)[0])
        if gb is None:  # gb depends on grad_output only
            gb = grad_output.new_zeros(ctx.weight_size[0])
        return gw, gb


def autograd_kernel(function, op):
    """The Autograd dispatch kernel of ``op``: ``function`` (an autograd.Function over ``op``)
    when any gradient is wanted, else straight to the device kernel."""
    def kernel(keyset, *args):
        if _needs_autograd(args):
            # A torch.func transform has already brought this call to its level when a
            # dispatcher kernel runs: record the node at this level, as ATen's C++ autograd
            # kernels do (what functorch itself does with its single-level Functions).
            with enable_single_level_autograd_function():
                return function.apply(*args)
        with torch._C._AutoDispatchBelowAutograd():
            return op.redispatch(keyset & torch._C._after_autograd_keyset, *args)
    return kernel


_lib = torch.library.Library("fastdw", "IMPL")
for _name, _function in (("depthwise_conv2d", Conv),
                         ("depthwise_conv2d_backward_input", BackwardInput),
                         ("depthwise_conv2d_backward_weight", BackwardWeight)):
    _lib.impl(_name, autograd_kernel(_function, getattr(_ops, _name).default), "Autograd",
              with_keyset=True)

"""The only module that touches the compiled library: loads it, registers fake kernels and
autograd for the fastdw ops, and exposes the functional API."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _args

try:
    from . import _C  # noqa: F401  (importing registers torch.ops.fastdw.*)
except ImportError as e:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "fastdw: the compiled extension fastdw._C could not be loaded. Build it with "
        "`pip install --no-build-isolation --use-pep517 -e .` (or `make build`) against the torch you "
        f"import ({torch.__version__}). Original error: {e}") from e

try:
    from torch._prims_common import suggest_memory_format as _suggest_memory_format
except ImportError:  # pragma: no cover - older torch
    def _suggest_memory_format(t):
        if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) \
                and not t.is_contiguous():
            return torch.channels_last
        return torch.contiguous_format

_ops = torch.ops.fastdw


def _kernel_memory_format(t: torch.Tensor) -> torch.memory_format:
    # Mirrors kernel_memory_format() in csrc/depthwise_args.h.
    if _suggest_memory_format(t) == torch.channels_last:
        return torch.channels_last
    return torch.contiguous_format


def _out_size(size, kernel, stride, pad, dilation):
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


# ---- fake (meta) kernels: shapes, dtypes and memory formats, for torch.compile -------------
# They check what the C++ kernels check (csrc/depthwise_args.h), with the same messages, so a
# traced or meta call fails exactly where an eager call would.

def _check(cond, *msg):
    if not cond:
        raise RuntimeError("fastdw: " + "".join(str(m) for m in msg))


def _check_same(a, a_name, b, b_name):
    _check(a.device == b.device, b_name, " is on ", b.device, " but ", a_name, " is on ", a.device)
    _check(a.dtype == b.dtype, b_name, " has dtype ", b.dtype, " but ", a_name, " has dtype ",
           a.dtype)
    _check(a.dtype.is_floating_point, a_name, " must be float64, float32, float16 or bfloat16, "
           "got ", a.dtype)


def _output_size(input_size, weight_size, stride, padding, dilation):
    """Mirrors make_params(): validates the geometry and returns (N, C*m, OH, OW)."""
    _check(len(input_size) == 4, "input must be 4-D (N, C, H, W), got ", len(input_size), "-D")
    _check(len(weight_size) == 4, "weight must be 4-D (C*m, 1, kh, kw), got ", len(weight_size),
           "-D")
    for name, v, lo in (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)):
        _check(len(v) == 2, name, " must have 2 elements (h, w), got ", len(v))
        _check(v[0] >= lo and v[1] >= lo, name, " must be >= ", lo, ", got (", v[0], ", ", v[1],
               ")")
    n, c, h, w = input_size
    cout, one, kh, kw = weight_size
    _check(c > 0, "input must have at least one channel")
    _check(one == 1 and cout > 0 and cout % c == 0,
           "weight must have shape (C*m, 1, kh, kw) with C = ", c, " input channels, got ",
           list(weight_size))
    _check(kh > 0 and kw > 0, "kernel size must be positive, got ", list(weight_size))
    _check(n == 0 or (h > 0 and w > 0),
           "input height and width must be positive for a non-empty batch, got ", list(input_size))
    limit = 2**60
    _check(max(padding) < limit // 4 and dilation[0] < limit // kh and dilation[1] < limit // kw
           and max(stride) < limit, "stride, padding or dilation too large")
    eff = [d * (k - 1) + 1 for d, k in zip(dilation, (kh, kw))]
    _check(eff[0] <= h + 2 * padding[0] and eff[1] <= w + 2 * padding[1],
           "dilated kernel (", eff[0], ", ", eff[1], ") is larger than the padded input (",
           h + 2 * padding[0], ", ", w + 2 * padding[1], ")")
    return (n, cout, _out_size(h, kh, stride[0], padding[0], dilation[0]),
            _out_size(w, kw, stride[1], padding[1], dilation[1]))


def _check_grad_output(grad_output, expected):
    _check(tuple(grad_output.shape) == tuple(expected), "grad_output must have shape ",
           tuple(expected), ", got ", tuple(grad_output.shape))


@torch.library.register_fake("fastdw::depthwise_conv2d")
def _(input, weight, bias, stride, padding, dilation):
    _check_same(input, "input", weight, "weight")
    if bias is not None:
        _check_same(input, "input", bias, "bias")
        _check(tuple(bias.shape) == (weight.shape[0],), "bias must have shape (",
               weight.shape[0], "), got ", tuple(bias.shape))
    size = _output_size(input.shape, weight.shape, stride, padding, dilation)
    return input.new_empty(size).contiguous(memory_format=_kernel_memory_format(input))


@torch.library.register_fake("fastdw::depthwise_conv2d_backward_input")
def _(grad_output, weight, input_size, stride, padding, dilation):
    _check_same(grad_output, "grad_output", weight, "weight")
    _check_grad_output(grad_output,
                       _output_size(input_size, weight.shape, stride, padding, dilation))
    return grad_output.new_empty(input_size).contiguous(
        memory_format=_kernel_memory_format(grad_output))


@torch.library.register_fake("fastdw::depthwise_conv2d_backward_weight")
def _(grad_output, input, weight_size, stride, padding, dilation):
    _check_same(input, "input", grad_output, "grad_output")
    _check_grad_output(grad_output,
                       _output_size(input.shape, weight_size, stride, padding, dilation))
    return grad_output.new_empty(weight_size), grad_output.new_empty((weight_size[0],))


# ---- autograd ----------------------------------------------------------------------------
# Each backward is expressed with the fastdw ops themselves, so double backward works too:
#   forward       y  = F(x, w) + b
#   grad input    gx = Bx(gy, w)          (linear in gy and in w)
#   grad weight   gw, gb = Bw(gy, x)      (linear in gy and in x; gb = sum of gy)

def _conv_setup(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation = inputs
    ctx.save_for_backward(input, weight)
    ctx.conv = (stride, padding, dilation)
    ctx.has_bias = bias is not None


def _conv_backward(ctx, grad):
    input, weight = ctx.saved_tensors
    stride, padding, dilation = ctx.conv
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    grad_input = grad_weight = grad_bias = None
    if need_input:
        grad_input = _ops.depthwise_conv2d_backward_input(
            grad, weight, list(input.shape), stride, padding, dilation)
    if need_weight or need_bias:
        gw, gb = _ops.depthwise_conv2d_backward_weight(
            grad, input, list(weight.shape), stride, padding, dilation)
        grad_weight = gw if need_weight else None
        grad_bias = gb if (need_bias and ctx.has_bias) else None
    return grad_input, grad_weight, grad_bias, None, None, None


torch.library.register_autograd(
    "fastdw::depthwise_conv2d", _conv_backward, setup_context=_conv_setup)


def _backward_input_setup(ctx, inputs, output):
    grad_output, weight, input_size, stride, padding, dilation = inputs
    ctx.save_for_backward(grad_output, weight)
    ctx.conv = (stride, padding, dilation)


def _backward_input_backward(ctx, v):
    grad_output, weight = ctx.saved_tensors
    stride, padding, dilation = ctx.conv
    d_grad_output = d_weight = None
    if ctx.needs_input_grad[0]:
        d_grad_output = _ops.depthwise_conv2d(v, weight, None, stride, padding, dilation)
    if ctx.needs_input_grad[1]:
        d_weight, _ = _ops.depthwise_conv2d_backward_weight(
            grad_output, v, list(weight.shape), stride, padding, dilation)
    return d_grad_output, d_weight, None, None, None, None


torch.library.register_autograd(
    "fastdw::depthwise_conv2d_backward_input", _backward_input_backward,
    setup_context=_backward_input_setup)


def _backward_weight_setup(ctx, inputs, output):
    grad_output, input, weight_size, stride, padding, dilation = inputs
    ctx.save_for_backward(grad_output, input)
    ctx.conv = (stride, padding, dilation)
    ctx.weight_size = tuple(weight_size)


def _backward_weight_backward(ctx, u, u_bias):
    grad_output, input = ctx.saved_tensors
    stride, padding, dilation = ctx.conv
    if u is None:  # only grad_bias was used downstream
        u = grad_output.new_zeros(ctx.weight_size)
    d_grad_output = d_input = None
    if ctx.needs_input_grad[0]:
        d_grad_output = _ops.depthwise_conv2d(input, u, u_bias, stride, padding, dilation)
    if ctx.needs_input_grad[1]:
        d_input = _ops.depthwise_conv2d_backward_input(
            grad_output, u, list(input.shape), stride, padding, dilation)
    return d_grad_output, d_input, None, None, None, None


torch.library.register_autograd(
    "fastdw::depthwise_conv2d_backward_weight", _backward_weight_backward,
    setup_context=_backward_weight_setup)


# ---- functional API ----------------------------------------------------------------------

def depthwise_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """Depthwise 2-D convolution: exactly ``F.conv2d(input, weight, bias, stride, padding,
    dilation, groups=C)`` for ``input`` of shape (N, C, H, W) (or unbatched (C, H, W)) and
    ``weight`` of shape (C*m, 1, kh, kw), with autograd.

    ``padding`` may be an int, a pair, ``'same'`` or ``'valid'``. The output keeps the input's
    memory format (NCHW or channels_last).
    """
    unbatched = isinstance(input, torch.Tensor) and input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    stride, padding, dilation, extra = _args.conv_args(input, weight, bias, stride, padding,
                                                       dilation)
    if extra != (0, 0):
        # padding='same' with an even effective kernel: PyTorch pads one more after.
        input = F.pad(input, (0, extra[1], 0, extra[0]))
    out = _ops.depthwise_conv2d(input, weight, bias, list(stride), list(padding), list(dilation))
    return out.squeeze(0) if unbatched else out

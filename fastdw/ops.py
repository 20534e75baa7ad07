"""The only module that touches the compiled library: loads it, registers fake kernels,
autograd (reverse and forward mode; fastdw/_autograd.py) and vmap rules (fastdw/_vmap.py) for
the fastdw ops, and exposes the functional API."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _args, geometry
from ._layouts import as_conv_layout, kernel_memory_format

try:
    from . import _C  # noqa: F401  (importing registers torch.ops.fastdw.*)
except ImportError as e:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "fastdw: the compiled extension fastdw._C could not be loaded. Build it with "
        "`pip install --no-build-isolation --use-pep517 -e .` (or `make build`) against the torch you "
        f"import ({torch.__version__}). Original error: {e}") from e

_ops = torch.ops.fastdw

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
    eff = [geometry.effective_kernel(k, d) for k, d in zip((kh, kw), dilation)]
    _check(eff[0] <= h + 2 * padding[0] and eff[1] <= w + 2 * padding[1],
           "dilated kernel (", eff[0], ", ", eff[1], ") is larger than the padded input (",
           h + 2 * padding[0], ", ", w + 2 * padding[1], ")")
    return (n, cout, *geometry.output_hw((h, w), (kh, kw), stride, padding, dilation))


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
    return input.new_empty(size).contiguous(memory_format=kernel_memory_format(input))


@torch.library.register_fake("fastdw::depthwise_conv2d_backward_input")
def _(grad_output, weight, input_size, stride, padding, dilation):
    _check_same(grad_output, "grad_output", weight, "weight")
    _check_grad_output(grad_output,
                       _output_size(input_size, weight.shape, stride, padding, dilation))
    return grad_output.new_empty(input_size).contiguous(
        memory_format=kernel_memory_format(grad_output))


@torch.library.register_fake("fastdw::depthwise_conv2d_backward_weight")
def _(grad_output, input, weight_size, stride, padding, dilation):
    _check_same(input, "input", grad_output, "grad_output")
    _check_grad_output(grad_output,
                       _output_size(input.shape, weight_size, stride, padding, dilation))
    return grad_output.new_empty(weight_size), grad_output.new_empty((weight_size[0],))


# ---- autograd and vmap ----------------------------------------------------------------------
# Registered as the ops' Autograd kernels and batching rules (see those modules for why).
from . import _autograd, _vmap  # noqa: E402,F401


# ---- functional API ----------------------------------------------------------------------

def depthwise_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """Depthwise 2-D convolution: exactly ``F.conv2d(input, weight, bias, stride, padding,
    dilation, groups=C)``, with autograd of any order, forward-mode AD and torch.func.

    Args:
        input: (N, C, H, W) or unbatched (C, H, W); float64, float32, float16 or bfloat16;
            NCHW, channels_last or any strides.
        weight: (C*m, 1, kh, kw) for a depth multiplier m >= 1; same dtype and device.
        bias: (C*m,) or None.
        stride, dilation: an int or a 1- or 2-element tuple/list of positive ints (h, w).
        padding: an int, a 1- or 2-element tuple/list of non-negative ints, ``'same'`` (stride
            1 only; an odd total pads one more at the bottom/right, as PyTorch does) or
            ``'valid'``. Zero padding; taps on it contribute nothing, also for a NaN or Inf
            weight (as PyTorch's oneDNN path).

    Returns:
        (N, C*m, OH, OW) with OH = (H + 2 * pad_h - dilation_h * (kh - 1) - 1) // stride_h + 1
        (likewise OW), in PyTorch's layout: channels_last when the input or the weight is
        channels_last, else NCHW.

    Raises:
        TypeError: an argument of the wrong type (as F.conv2d).
        fastdw.ArgumentError (a ValueError and a RuntimeError): a bad shape, size, value
            or device; the message names the argument.
        fastdw.DtypeError (a TypeError and a RuntimeError): an unsupported or
            mismatched dtype or tensor layout.
    """
    unbatched = isinstance(input, torch.Tensor) and input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    stride, padding, dilation, extra = _args.conv_args(input, weight, bias, stride, padding,
                                                       dilation)
    if extra != (0, 0):
        # padding='same' with an even effective kernel: PyTorch pads one more after.
        input = F.pad(input, (0, extra[1], 0, extra[0]))
    out = _ops.depthwise_conv2d(as_conv_layout(input, weight), weight, bias, list(stride),
                                list(padding), list(dilation))
    return out.squeeze(0) if unbatched else out

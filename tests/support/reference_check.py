"""Comparison with the float64 reference (``fastdw.reference``, i.e. F.conv2d in float64):
the assertion every test uses, and the whole depthwise check (forward, strides, gradients)."""
from __future__ import annotations

from typing import Optional

import torch

import fastdw
from fastdw import accuracy, reference
from fastdw.accuracy import Expected

def assert_matches(actual: torch.Tensor, expected: Expected, dtype, what: str,
                   rounded_to: Optional[str] = None):
    """``actual`` within fastdw.accuracy's error bound of ``expected`` (NaN fails, except where
    the reference is NaN), else an AssertionError naming the first element off."""
    assert actual.shape == expected.value.shape, (
        f"{what}: shape {tuple(actual.shape)} != {tuple(expected.value.shape)}")
    verdict = accuracy.compare(actual.detach().cpu(), expected, dtype, rounded_to)
    if not verdict.ok:
        raise AssertionError(verdict.message(what))


def assert_close_to_reference(actual: torch.Tensor, expected64: torch.Tensor, dtype, what: str,
                              terms: float = accuracy.STATED_TERMS, rounded_to: Optional[str] = None):
    """The same rule where only the float64 value is at hand: magnitude ``max(1, max |ref|)``,
    ``terms`` products per element (fastdw.accuracy.Expected.of_size)."""
    assert_matches(actual, accuracy.Expected.of_size(expected64.detach().cpu(), terms), dtype,
                   what, rounded_to)


def depthwise_expected(x, w, b, grad_output, stride, padding, dilation):
    """fastdw.accuracy expectations of (output, grad_input, grad_weight, grad_bias) of a
    depthwise conv for ``grad_output`` (all on the CPU, float64); the bias gradient is there
    even when ``b`` is None (as the raw backward-weight op returns it)."""
    bias = torch.zeros(w.shape[0], dtype=torch.float64) if b is None else b.detach().cpu()

    def conv(x, w, b):
        return reference.depthwise_conv2d(x, w, b, stride, padding, dilation)

    return accuracy.expected(conv, [x.detach().cpu(), w.detach().cpu(), bias],
                             None if grad_output is None else grad_output.detach().cpu())


def as_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """``t`` in 'nchw' (as given) or 'channels_last' memory format."""
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else t


def poison_allocator(*shapes, dtype, device="cpu"):
    """Allocates and frees NaN-filled blocks: allocators hand freed blocks back to the next
    request of a similar size, so an element a kernel forgets to write shows as NaN instead of
    a plausible leftover."""
    for shape in shapes:
        torch.full(shape, float("nan"), dtype=dtype, device=device)


def check_against_reference(cfg, dtype, layout: str, device: str = "cpu"):
    """fastdw.depthwise_conv2d on ``device`` vs the float64 reference (on the CPU) for one config:
    output values and strides, then every gradient (for a grad_output rounded to ``dtype``, so
    both see the same values), after poisoning the allocator."""
    x, w, b = cfg.make(dtype=dtype, channels_last=(layout == "channels_last"), requires_grad=True)
    grad = torch.randn(cfg.out_shape, dtype=torch.float64).to(dtype)
    expected = depthwise_expected(x, w, b, grad, **cfg.conv_args)
    ref = expected[0].value
    xd, wd, bd = (None if t is None else t.detach().to(device).requires_grad_()
                  for t in (x, w, b))
    poison_allocator(ref.shape, x.shape, w.shape, dtype=dtype, device=device)
    out = fastdw.depthwise_conv2d(xd, wd, bd, **cfg.conv_args)
    assert out.dtype == dtype and out.device.type == device
    assert out.stride() == ref.stride(), (
        f"{cfg} {layout}: output strides {out.stride()} differ from F.conv2d's {ref.stride()}")
    what = f"{cfg} {layout}"
    assert_matches(out, expected[0], dtype, f"{what} forward")
    out.backward(as_layout(grad, layout).to(device))
    for name, got, exp in zip(("grad_input", "grad_weight", "grad_bias"),
                              (xd.grad, wd.grad, None if b is None else bd.grad), expected[1:]):
        if got is not None:
            assert_matches(got, exp, dtype, f"{what} {name}")

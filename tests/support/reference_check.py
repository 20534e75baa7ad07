"""Comparison with the float64 reference (``fastdw.reference``, i.e. F.conv2d in float64):
the assertion every test uses, and the whole depthwise check (forward, strides, gradients)."""
from __future__ import annotations

from typing import Optional

import torch

import fastdw
from fastdw import reference

# Per-dtype tolerances vs the float64 reference (fp32 accumulation for half types).
TOLERANCES = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
}


def assert_close_to_reference(actual: torch.Tensor, expected64: torch.Tensor, dtype, what: str,
                              scale: Optional[float] = None):
    """Compares against a float64 reference; tolerances scale with the reference's magnitude
    (a sum of many terms carries error proportional to its size) and print the worst element."""
    tol = TOLERANCES[dtype]
    expected = expected64.to(torch.float64)
    actual = actual.detach().to(torch.float64).cpu()
    expected = expected.detach().cpu()
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if scale is None:
        scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    err = (actual - expected).abs()
    assert_within(actual, expected, tol["atol"] * scale + tol["rtol"] * expected.abs(), what,
                  f"max abs err {err.max().item():.3g} (scale {scale:.3g}, {dtype})")


def assert_within(actual: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor, what: str,
                  detail: str):
    """|actual - expected| <= bound for every element (float64 CPU tensors; NaN fails), else
    an AssertionError with the count, the first element off and ``detail``."""
    bad = ~((actual - expected).abs() <= bound)
    if bad.any():
        idx = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.numel()} elements off; first at {idx}: "
            f"got {actual[idx].item()!r}, expected {expected[idx].item()!r}, bound "
            f"{bound[idx].item():.3g}; {detail}")


def assert_gradients_close(grads, grads64, dtype, out_shape, batch: int, what: str):
    """(grad_input, grad_weight, grad_bias or None) against their float64 references. A weight
    or bias gradient sums N*OH*OW terms: its tolerance scales with that length."""
    (gx, gw, gb), (rx, rw, rb) = grads, grads64
    assert_close_to_reference(gx, rx, dtype, f"{what} grad_input")
    terms = (batch * out_shape[2] * out_shape[3]) ** 0.5
    assert_close_to_reference(gw, rw, dtype, f"{what} grad_weight",
                              max(1.0, rw.abs().max().item(), terms))
    if gb is not None:
        assert_close_to_reference(gb, rb, dtype, f"{what} grad_bias",
                                  max(1.0, rb.abs().max().item(), terms))


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
    x64, w64, b64 = (None if t is None else t.detach().double().requires_grad_() for t in (x, w, b))
    ref = reference.depthwise_conv2d(x64, w64, b64, **cfg.conv_args)
    xd, wd, bd = (None if t is None else t.detach().to(device).requires_grad_()
                  for t in (x, w, b))
    poison_allocator(ref.shape, x.shape, w.shape, dtype=dtype, device=device)
    out = fastdw.depthwise_conv2d(xd, wd, bd, **cfg.conv_args)
    assert out.dtype == dtype and out.device.type == device
    assert out.stride() == ref.stride(), (
        f"{cfg} {layout}: output strides {out.stride()} differ from F.conv2d's {ref.stride()}")
    assert_close_to_reference(out, ref, dtype, f"{cfg} {layout} forward")
    grad = torch.randn(ref.shape, dtype=torch.float64).to(dtype)
    ref.backward(grad.double())
    out.backward(as_layout(grad, layout).to(device))
    assert_gradients_close((xd.grad, wd.grad, None if b is None else bd.grad),
                           (x64.grad, w64.grad, None if b is None else b64.grad),
                           dtype, ref.shape, cfg.n, f"{cfg} {layout}")

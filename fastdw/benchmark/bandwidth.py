"""What each pass must move and compute, and the copy bandwidth it is measured against.

Bytes are the minimal device-memory traffic of a pass: every tensor it needs read once, every
tensor it produces written once (intermediates of a fused op are not counted: not writing them
is the point of fusing). FLOPs count a multiply-add as two.
"""
from __future__ import annotations

from typing import Dict

import torch

from .suites import Case

PASSES = ("fwd", "bwd_input", "bwd_weight", "fwd+bwd")
PASSES_BY_KIND = {
    "depthwise": PASSES,
    "separable": ("fwd", "fwd+bwd"),
}


def _sizes(case: Case) -> Dict[str, int]:
    """Element counts of the tensors a case touches."""
    s, n = case.shape, case.n
    oh, ow = s.out_hw
    if s.kind == "separable":
        weights = s.c * s.kh * s.kw + s.c_out * s.c + ((s.c + s.c_out) if s.bias else 0)
        out = n * s.c_out * oh * ow
    else:
        weights = s.c * s.m * s.kh * s.kw + (s.c * s.m if s.bias else 0)
        out = n * s.c * s.m * oh * ow
    return {"x": n * s.c * s.h * s.w, "weights": weights, "y": out}


def traffic_bytes(case: Case, pass_: str, element_size: int) -> int:
    z = _sizes(case)
    x, wts, y = z["x"], z["weights"], z["y"]
    if pass_ == "fwd":            # read x, w, b; write y
        elems = x + wts + y
    elif pass_ == "bwd_input":    # read gy, w; write gx
        elems = y + (wts - (case.shape.c * case.shape.m if case.shape.bias else 0)) + x
    elif pass_ == "bwd_weight":   # read gy, x; write gw, gb
        elems = y + x + wts
    elif pass_ == "fwd+bwd":      # read x, w, b, gy; write y, gx, gw, gb
        elems = 2 * (x + wts + y)
    else:
        raise ValueError(f"unknown pass {pass_!r}")
    return elems * element_size


def flops(case: Case, pass_: str) -> int:
    s, n = case.shape, case.n
    oh, ow = s.out_hw
    if s.kind == "separable":
        one = 2 * n * s.c * oh * ow * s.kh * s.kw + 2 * n * s.c * s.c_out * oh * ow
    else:
        one = 2 * n * s.c * s.m * oh * ow * s.kh * s.kw
    return one * (3 if pass_ == "fwd+bwd" else 1)


def copy_bandwidth(device: torch.device, timer, nbytes: int) -> float:
    """GB/s of ``dst.copy_(src)`` for a tensor of ``nbytes`` (counting bytes read plus bytes
    written), timed by ``timer`` (``{name: fn} -> {name: Timing}``) like the benchmark."""
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    timing = timer({"copy": lambda: dst.copy_(src)})["copy"]
    return 2 * src.numel() * src.element_size() / (timing.median_ms * 1e-3) / 1e9

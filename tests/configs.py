"""Shared config tables and comparison helpers for every kernel test module."""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import torch


@dataclasses.dataclass(frozen=True)
class Conv:
    n: int
    c: int
    h: int
    w: int
    kh: int = 3
    kw: int = 3
    m: int = 1  # depth multiplier
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int] = (1, 1)
    dilation: Tuple[int, int] = (1, 1)
    bias: bool = True

    def __str__(self):
        return (f"n{self.n}c{self.c}m{self.m}_{self.h}x{self.w}_k{self.kh}x{self.kw}"
                f"_s{self.stride[0]}{self.stride[1]}_p{self.padding[0]}{self.padding[1]}"
                f"_d{self.dilation[0]}{self.dilation[1]}{'_b' if self.bias else ''}")

    def make(self, dtype=torch.float64, device="cpu", channels_last=False, requires_grad=False,
             generator: Optional[torch.Generator] = None):
        """Random (never zero) input, weight and bias for this config."""
        g = generator or torch.Generator().manual_seed(hash(str(self)) % (2**31))
        x = torch.randn(self.n, self.c, self.h, self.w, generator=g, dtype=torch.float64)
        w = torch.randn(self.c * self.m, 1, self.kh, self.kw, generator=g, dtype=torch.float64)
        b = torch.randn(self.c * self.m, generator=g, dtype=torch.float64) if self.bias else None
        x, w = x.to(device, dtype), w.to(device, dtype)
        b = b.to(device, dtype) if b is not None else None
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for t in (x, w, b):
            if t is not None:
                t.requires_grad_(requires_grad)
        return x, w, b

    @property
    def conv_args(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation)


def _table():
    s, p, d = (lambda a, b=None: (a, a if b is None else b),) * 3
    cfgs = [
        Conv(2, 3, 7, 9),                                     # odd sizes, 3x3
        Conv(1, 4, 8, 8, kh=1, kw=1, padding=(0, 0)),         # 1x1
        Conv(3, 2, 11, 10, kh=5, kw=5, padding=(2, 2)),       # 5x5
        Conv(1, 2, 9, 13, kh=7, kw=7, padding=(3, 3)),        # 7x7
        Conv(2, 3, 10, 12, kh=1, kw=7, padding=(0, 3)),       # 1x7
        Conv(2, 3, 12, 10, kh=7, kw=1, padding=(3, 0)),       # 7x1
        Conv(1, 3, 9, 9, stride=s(2)),                         # stride 2
        Conv(2, 2, 10, 11, stride=s(3), padding=p(0)),         # stride 3, no padding
        Conv(1, 2, 8, 9, stride=(1, 2), padding=(0, 2)),       # per-axis stride/padding
        Conv(2, 3, 9, 9, dilation=d(2), padding=p(2)),         # dilation 2
        Conv(1, 2, 11, 9, kh=3, kw=5, dilation=(2, 1), padding=(1, 3)),
        Conv(2, 2, 7, 8, m=2),                                 # depth multiplier 2
        Conv(1, 3, 6, 7, m=3, kh=5, kw=3, stride=s(2), padding=(2, 1)),
        Conv(1, 2, 5, 6, padding=p(3)),                        # padding beyond k/2
        Conv(3, 2, 4, 5, kh=5, kw=5, padding=p(4)),            # padding much beyond k/2
        Conv(1, 2, 1, 1, padding=p(1)),                        # 1x1 image
        Conv(1, 2, 1, 9, kh=1, kw=3, padding=(0, 1)),          # H = 1
        Conv(2, 2, 9, 1, kh=3, kw=1, padding=(1, 0)),          # W = 1
        Conv(1, 2, 6, 6, bias=False),
        Conv(1, 2, 9, 9, kh=9, kw=9, padding=p(4)),            # large kernel
        Conv(5, 1, 7, 7, stride=s(2), dilation=d(2), padding=p(3)),
    ]
    return cfgs


CONFIGS = _table()

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
    bound = tol["atol"] * scale + tol["rtol"] * expected.abs()
    bad = ~(err <= bound)  # NaN counts as bad
    if bad.any():
        idx = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {err.numel()} elements off; first at {idx}: "
            f"got {actual[idx].item()!r}, expected {expected[idx].item()!r}; "
            f"max abs err {err.max().item():.3g} (scale {scale:.3g}, {dtype})")


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

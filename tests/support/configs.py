"""The depthwise convolution configs every kernel test shares: ``Conv`` (one problem, with
random never-zero tensors for it) and the named table ``CONV``."""
from __future__ import annotations

import dataclasses
import zlib
from typing import Dict, Optional, Tuple

import torch

import fastdw.geometry


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
        g = generator or torch.Generator().manual_seed(zlib.crc32(str(self).encode()))
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
    def out_shape(self):
        return (self.n, self.c * self.m, *fastdw.geometry.output_hw(
            (self.h, self.w), (self.kh, self.kw), self.stride, self.padding, self.dilation))

    @property
    def conv_args(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation)


_s = _p = _d = lambda a, b=None: (a, a if b is None else b)

# The depthwise config table: every kernel test runs all of it; a test that needs a few picks
# them by name (CONV["stride2"]), and parametrize ids are the configs' str().
CONV: Dict[str, Conv] = dict(
    odd_3x3=Conv(2, 3, 7, 9),
    k1x1=Conv(1, 4, 8, 8, kh=1, kw=1, padding=(0, 0)),
    k5x5=Conv(3, 2, 11, 10, kh=5, kw=5, padding=(2, 2)),
    k7x7=Conv(1, 2, 9, 13, kh=7, kw=7, padding=(3, 3)),
    k1x7=Conv(2, 3, 10, 12, kh=1, kw=7, padding=(0, 3)),
    k7x1=Conv(2, 3, 12, 10, kh=7, kw=1, padding=(3, 0)),
    stride2=Conv(1, 3, 9, 9, stride=_s(2)),
    stride3_no_padding=Conv(2, 2, 10, 11, stride=_s(3), padding=_p(0)),
    per_axis_stride_padding=Conv(1, 2, 8, 9, stride=(1, 2), padding=(0, 2)),
    dilation2=Conv(2, 3, 9, 9, dilation=_d(2), padding=_p(2)),
    rect_dilation=Conv(1, 2, 11, 9, kh=3, kw=5, dilation=(2, 1), padding=(1, 3)),
    multiplier2=Conv(2, 2, 7, 8, m=2),
    multiplier3_stride2=Conv(1, 3, 6, 7, m=3, kh=5, kw=3, stride=_s(2), padding=(2, 1)),
    padding_beyond_half=Conv(1, 2, 5, 6, padding=_p(3)),
    padding_far_beyond=Conv(3, 2, 4, 5, kh=5, kw=5, padding=_p(4)),
    image_1x1=Conv(1, 2, 1, 1, padding=_p(1)),
    height1=Conv(1, 2, 1, 9, kh=1, kw=3, padding=(0, 1)),
    width1=Conv(2, 2, 9, 1, kh=3, kw=1, padding=(1, 0)),
    no_bias=Conv(1, 2, 6, 6, bias=False),
    k9x9=Conv(1, 2, 9, 9, kh=9, kw=9, padding=_p(4)),
    stride2_dilation2=Conv(5, 1, 7, 7, stride=_s(2), dilation=_d(2), padding=_p(3)),
)
CONFIGS = list(CONV.values())


def pick(*names: str):
    """The named configs of CONV, in this order."""
    return [CONV[name] for name in names]

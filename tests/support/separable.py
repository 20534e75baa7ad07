"""The separable (depthwise + activation + pointwise) configs the fused-op and composed-path
tests share: ``Sep`` (one problem, with random never-zero tensors for it) and the named table
``SEP``."""
from __future__ import annotations

import dataclasses
import zlib
from typing import Dict

import torch

from tests.support.configs import Conv


@dataclasses.dataclass(frozen=True)
class Sep:
    conv: Conv
    c_out: int
    activation: object = "relu"
    pw_bias: bool = True

    def __str__(self):
        return f"{self.conv}_o{self.c_out}_{self.activation}{'_pb' if self.pw_bias else ''}"

    def make(self, dtype, device, channels_last=False):
        """(input, dw_weight, dw_bias, pw_weight, pw_bias), leaves that require grad."""
        g = torch.Generator().manual_seed(zlib.crc32(str(self).encode()))
        x, w, b = self.conv.make(generator=g)
        pw = torch.randn(self.c_out, self.conv.c * self.conv.m, 1, 1, generator=g,
                         dtype=torch.float64) / self.conv.c ** 0.5
        pb = torch.randn(self.c_out, generator=g, dtype=torch.float64) if self.pw_bias else None
        out = [None if t is None else t.to(device, dtype) for t in (x, w, b, pw, pb)]
        if channels_last:
            out[0] = out[0].contiguous(memory_format=torch.channels_last)
        return [None if t is None else t.requires_grad_() for t in out]

    @property
    def conv_args(self):
        return dict(activation=self.activation, **self.conv.conv_args)


s2 = (2, 2)
# Each config reaches a part of the fused kernel; tests pick them by name (SEP["k5x5_gelu"]).
SEP: Dict[str, "Sep"] = dict(
    k3x3_relu=Sep(Conv(2, 8, 7, 7), 12, "relu"),
    k5x5_gelu=Sep(Conv(1, 16, 9, 9, kh=5, kw=5, padding=(2, 2)), 8, "gelu"),
    k7x7_relu6_no_biases=Sep(Conv(1, 4, 9, 8, kh=7, kw=7, padding=(3, 3), bias=False), 16,
                             "relu6", pw_bias=False),
    stride2_linear=Sep(Conv(2, 6, 9, 9, stride=s2), 5, None),
    dilation2_two_cout_tiles=Sep(Conv(1, 5, 8, 9, dilation=s2, padding=s2), 20, "relu"),
    two_cin_chunks=Sep(Conv(1, 20, 6, 7, kh=3, kw=5, stride=(2, 1), padding=(0, 2)), 4, "gelu"),
    padding_beyond_half=Sep(Conv(1, 3, 6, 6, padding=(3, 3)), 6, "relu6", pw_bias=False),
    k9x9_row_loop=Sep(Conv(1, 2, 9, 9, kh=9, kw=9, padding=(4, 4)), 3, "none"),
)
SEPARABLE_CONFIGS = list(SEP.values())

"""Xception (Chollet 2017, "Xception: Deep Learning with Depthwise Separable Convolutions"):
36 convolutions in 14 modules, all residual except the first and last, built from
depthwise-separable convs.

The layout follows the paper's Figure 5 and Keras' ``keras.applications.Xception``:

* entry flow: conv 3x3/2 (32) -> conv 3x3 (64), both unpadded ("valid"); then three modules
  128, 256, 728: [ReLU] -> SepConv -> BN -> ReLU -> SepConv -> BN -> MaxPool 3x3/2, plus a
  1x1/2 conv + BN shortcut (the first module has no leading ReLU: the stem ends with one);
* middle flow: 8 x (ReLU -> SepConv 728 -> BN) x 3, identity shortcut;
* exit flow: ReLU -> SepConv 728 -> BN -> ReLU -> SepConv 1024 -> BN -> MaxPool 3x3/2, plus a
  1x1/2 conv + BN shortcut; SepConv 1536 -> BN -> ReLU -> SepConv 2048 -> BN -> ReLU;
  global average pool -> fully connected (with bias) to ``num_classes``.

A SepConv is a 3x3 depthwise conv then a 1x1 pointwise conv with *no* normalisation or
activation in between and no biases (Keras ``SeparableConv2D(use_bias=False)``; the paper found
no intermediate non-linearity best). Every conv is bias-free since BatchNorm follows.

Parameter count: 22,855,952 with 1000 classes. That is Keras' *trainable* count for
``Xception(include_top=True)``: PyTorch parameters include BatchNorm's weight and bias (Keras'
trainable gamma/beta), while the running mean and variance (Keras' 54,528 non-trainable weights,
total 22,910,480) are buffers here. Keras pads its stride-2 max pools "same" (asymmetrically,
for even sizes); here they use padding=1, which gives the same output sizes and, for odd input
sizes such as those of the 299x299 network, the same windows.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from ..nn import DepthwiseSeparableConv2d

__all__ = ["Xception", "xception"]


def separable_conv(in_channels: int, out_channels: int, use_fastdw: bool) -> nn.Module:
    """3x3 depthwise + 1x1 pointwise, no biases. The stock version is a Sequential with the
    same parameter names (``depthwise.weight``, ``pointwise.weight``) as the fastdw module."""
    if use_fastdw:
        return DepthwiseSeparableConv2d(in_channels, out_channels, 3, padding=1, bias=False)
    return nn.Sequential(OrderedDict(
        depthwise=nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels,
                            bias=False),
        pointwise=nn.Conv2d(in_channels, out_channels, 1, bias=False),
    ))


class XceptionBlock(nn.Module):
    """A residual module: ``main(x) + shortcut(x)``. ``channels`` lists each SepConv's output
    channels; with ``downsample`` the main path ends in a 3x3/2 max pool and the shortcut is a
    1x1/2 conv + BN, otherwise the shortcut is the identity."""

    def __init__(self, in_channels: int, channels, downsample: bool, start_with_relu: bool,
                 use_fastdw: bool) -> None:
        super().__init__()
        layers = []
        prev = in_channels
        for i, out in enumerate(channels):
            if i > 0 or start_with_relu:
                # not in place at i == 0: the shortcut still needs the block's input
                layers.append(nn.ReLU(inplace=i > 0))
            layers += [separable_conv(prev, out, use_fastdw), nn.BatchNorm2d(out)]
            prev = out
        if downsample:
            layers.append(nn.MaxPool2d(3, stride=2, padding=1))
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, prev, 1, stride=2, bias=False),
                                          nn.BatchNorm2d(prev))
        else:
            if prev != in_channels:
                raise ValueError("an identity shortcut needs equal input and output channels")
            self.shortcut = nn.Identity()
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)


class Xception(nn.Module):
    def __init__(self, num_classes: int = 1000, use_fastdw: bool = True) -> None:
        super().__init__()
        f = use_fastdw
        self.entry_flow = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            XceptionBlock(64, (128, 128), True, start_with_relu=False, use_fastdw=f),
            XceptionBlock(128, (256, 256), True, start_with_relu=True, use_fastdw=f),
            XceptionBlock(256, (728, 728), True, start_with_relu=True, use_fastdw=f),
        )
        self.middle_flow = nn.Sequential(*[
            XceptionBlock(728, (728, 728, 728), False, start_with_relu=True, use_fastdw=f)
            for _ in range(8)])
        self.exit_flow = nn.Sequential(
            XceptionBlock(728, (728, 1024), True, start_with_relu=True, use_fastdw=f),
            separable_conv(1024, 1536, f), nn.BatchNorm2d(1536), nn.ReLU(inplace=True),
            separable_conv(1536, 2048, f), nn.BatchNorm2d(2048), nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.exit_flow(self.middle_flow(self.entry_flow(x)))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def xception(num_classes: int = 1000, *, use_fastdw: bool = True) -> Xception:
    """Xception (299x299 in the paper; any input of at least 29x29 works). ``use_fastdw=False``
    builds the stock model, whose separable convs are pairs of ``nn.Conv2d``."""
    return Xception(num_classes, use_fastdw=use_fastdw)

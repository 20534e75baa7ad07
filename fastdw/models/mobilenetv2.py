"""MobileNetV2 (Sandler et al. 2018), module for module the layout of torchvision's
``mobilenet_v2`` so its state_dict keys (``features.3.conv.1.0.weight``...) and parameter count
(3,504,872 for width 1.0 and 1000 classes) are the same, and pretrained weights load."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ..nn import DepthwiseConv2d

__all__ = ["MobileNetV2", "mobilenet_v2"]

# t (expansion), c (output channels), n (repeats), s (stride of the first repeat)
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _make_divisible(v: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """Rounds channels to a multiple of ``divisor``, never more than 10% below ``v``."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNReLU6(nn.Sequential):
    """conv (no bias) -> BatchNorm2d -> ReLU6; the conv is a ``DepthwiseConv2d`` when
    ``groups == in_channels`` and ``depthwise_conv`` is that class."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, groups: int = 1, conv_layer=nn.Conv2d) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            conv_layer(in_channels, out_channels, kernel_size, stride, padding, groups=groups,
                       bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )
        self.out_channels = out_channels


class InvertedResidual(nn.Module):
    """1x1 expand (xt) + BN + ReLU6, 3x3 depthwise + BN + ReLU6, 1x1 project + BN; the input
    is added back when the stride is 1 and the channel counts match."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int,
                 depthwise_layer=nn.Conv2d) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride should be 1 or 2, got {stride}")
        self.stride = stride
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(inp, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden, conv_layer=depthwise_layer),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0,
                 round_nearest: int = 8, dropout: float = 0.2, use_fastdw: bool = True) -> None:
        super().__init__()
        depthwise_layer = DepthwiseConv2d if use_fastdw else nn.Conv2d
        input_channel = _make_divisible(32 * width_mult, round_nearest)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features = [ConvBNReLU6(3, input_channel, stride=2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            output_channel = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel,
                                                 s if i == 0 else 1, t, depthwise_layer))
                input_channel = output_channel
        features.append(ConvBNReLU6(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout),
                                        nn.Linear(self.last_channel, num_classes))
        # torchvision's initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # DepthwiseConv2d included
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, *, dropout: float = 0.2,
                 use_fastdw: bool = True, **kwargs) -> MobileNetV2:
    """MobileNetV2 with the standard configuration (torchvision's layout and initialisation).

    ``use_fastdw=True`` builds the 3x3 depthwise convs as ``fastdw.nn.DepthwiseConv2d``;
    ``False`` gives the stock model (``nn.Conv2d(groups=C)``), which ``fastdw.convert`` turns
    into the former. Both have the same state_dict keys and shapes as torchvision's.
    """
    return MobileNetV2(num_classes, width_mult, dropout=dropout, use_fastdw=use_fastdw,
                       **kwargs)

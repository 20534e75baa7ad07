"""The models the export and revert tests ship: the tutorial's MobileNetV2 and Xception
(``fastdw.models``, stock form) and a small model with depth multiplier 2, dilation and an
asymmetric ``padding='same'``; each with BatchNorm statistics taken from data, so outputs are
of order one and a 1e-5 tolerance means something (with torchvision's initialisation and
identity BatchNorms, MobileNetV2's logits are about 1e-10). 64x64 images: at 32x32 the last
layers of both networks see 1x1 maps, which makes them ill-conditioned too."""
from __future__ import annotations

import functools

import torch
import torch.nn as nn

import fastdw
from fastdw.models import mobilenet_v2, xception


def _multiplier_dilation_same() -> nn.Module:
    return nn.Sequential(
        # multiplier 2; 'same' with dilation*(k-1) = 3 (odd: one more row after) x 4 (even)
        nn.Conv2d(4, 8, (4, 3), padding="same", dilation=(1, 2), groups=4),
        nn.BatchNorm2d(8), nn.ReLU6(),
        nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=8, bias=False),  # s2, d2
        nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 5, 1),
    )


# name -> (stock model builder, input shape)
MODELS = {
    "mobilenet_v2": (lambda: mobilenet_v2(num_classes=10, use_fastdw=False), (2, 3, 64, 64)),
    "xception": (lambda: xception(num_classes=10, use_fastdw=False), (2, 3, 64, 64)),
    "multiplier2_dilation_same": (_multiplier_dilation_same, (2, 4, 11, 13)),
}


def calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Sets every BatchNorm's running statistics to those of ``x``'s activations; returns the
    model in eval mode."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch sets the statistics
    with torch.no_grad():
        model.train()(x)
    return model.eval()


@functools.lru_cache(maxsize=None)
def stock_model(name: str, seed: int = 0):
    """(stock model in eval mode with calibrated BatchNorms, an input for it), built once per
    process: callers must not modify it (``convert`` and ``revert`` copy by default)."""
    build, shape = MODELS[name]
    torch.manual_seed(seed)
    model = build()
    x = torch.randn(shape)
    # 16 images: statistics from fewer make some channels nearly constant, and their
    # BatchNorm then amplifies float32 rounding (MobileNetV2 calibrated on 2 images differs from
    # its own float64 copy by 5e-4; on 16 images of 64x64, by 3e-6).
    return calibrate_batchnorm(model, torch.randn(16, *shape[1:])), x


def converted_model(name: str, fuse: bool = False):
    """(stock model, fastdw.convert of it, input); ``fuse=True`` also folds and fuses."""
    stock, x = stock_model(name)
    converted, _ = fastdw.convert(stock, fuse=fuse)
    return stock, converted, x


def depthwise_groups(stock: nn.Module):
    """Sorted ``groups`` of the stock model's depthwise convs: every one must come out as an
    ONNX Conv with that group count."""
    return sorted(m.groups for m in stock.modules()
                  if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels)

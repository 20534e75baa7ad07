"""``python -m fastdw viz --out features.png [--image PATH]``: the tutorial's three heatmaps.

An RGB image goes through a depthwise 3x3 conv (one edge filter per channel: Sobel-x on red,
Sobel-y on green, a Laplacian on blue) and then a pointwise 1x1 conv (3 -> C_out, seeded random
weights), computed with fastdw's ops. The three panels: the input's channel mean, the
depthwise output's mean absolute response (edges, per channel, no mixing), and the pointwise
output's channel mean (channels mixed into new patterns). Without ``--image`` a built-in
synthetic picture is used: gradients, a disc, a square, a triangle and stripes.
"""
from __future__ import annotations

import math
import os

from . import command_parser, positive_int

EDGE_FILTERS = {
    "sobel-x (R)": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "sobel-y (G)": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "laplacian (B)": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
}
MAX_SIDE = 512


def add_parser(sub) -> None:
    p = command_parser(sub, "viz", "the tutorial's feature heatmaps (input, depthwise, pointwise)",
                       __doc__, run)
    p.add_argument("--out", "-o", default="features.png", help="PNG to write (default "
                                                                "features.png)")
    p.add_argument("--image", help="an image to use (PNG; other formats need Pillow); images "
                                   f"larger than {MAX_SIDE} px are scaled down")
    p.add_argument("--size", type=positive_int, default=128,
                   help="side of the synthetic image (default 128)")
    p.add_argument("--channels-out", type=positive_int, default=64,
                   help="pointwise output channels (default 64, as in the tutorial)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pointwise weights")


def synthetic_image(size: int = 128):
    """A (3, size, size) float32 RGB picture in [0, 1] with structure: colour gradients, a
    disc, a square, a triangle and a patch of diagonal stripes."""
    import torch

    t = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    img = torch.stack([0.15 + 0.5 * xx, 0.15 + 0.5 * yy, 0.55 - 0.35 * xx * yy])
    disc = (xx - 0.3) ** 2 + (yy - 0.3) ** 2 < 0.17 ** 2
    square = (xx > 0.58) & (xx < 0.88) & (yy > 0.14) & (yy < 0.44)
    triangle = (yy > 0.58) & (yy < 0.9) & ((xx - 0.3).abs() < (yy - 0.58) * 0.75)
    stripes = (xx > 0.58) & (xx < 0.9) & (yy > 0.58) & (yy < 0.9)
    for mask, rgb in ((disc, (0.95, 0.25, 0.2)), (square, (0.15, 0.85, 0.35)),
                      (triangle, (0.2, 0.35, 0.95))):
        for ch, v in enumerate(rgb):
            img[ch][mask] = v
    wave = 0.5 + 0.5 * torch.sin(2 * math.pi * 8 * (xx + yy))
    for ch in range(3):
        img[ch][stripes] = wave[stripes] * (0.9 if ch != 1 else 0.5)
    return img.clamp(0, 1).contiguous()


def load_image(path: str):
    """(3, H, W) float32 in [0, 1] from a file, via matplotlib.image.imread."""
    import matplotlib.image as mpimg
    import numpy as np
    import torch
    import torch.nn.functional as F

    arr = np.asarray(mpimg.imread(path))
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    arr = arr.astype(np.float32)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"{path}: expected a grey, RGB or RGBA image, got shape {arr.shape}")
    img = torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1).contiguous()
    side = max(img.shape[1:])
    if side > MAX_SIDE:
        size = [max(1, round(s * MAX_SIDE / side)) for s in img.shape[1:]]
        img = F.interpolate(img[None], size=size, mode="area")[0]
    return img


def features(img, channels_out: int = 64, seed: int = 0):
    """The three maps (input mean, depthwise |response| mean, pointwise mean) and a note on
    how they were computed. The depthwise and pointwise outputs come from fastdw's ops and are
    checked against fastdw.reference."""
    import torch

    import fastdw
    from fastdw import reference
    from .. import accuracy

    # Replicate the border instead of zero padding, so the image's edge is not an "edge".
    x = torch.nn.functional.pad(img[None].float(), (1, 1, 1, 1), mode="replicate")
    dw = torch.tensor(list(EDGE_FILTERS.values()), dtype=torch.float32)[:, None]
    g = torch.Generator().manual_seed(seed)
    pw = torch.randn(channels_out, 3, 1, 1, generator=g) / math.sqrt(3)
    mid = fastdw.depthwise_conv2d(x, dw, None, padding=0)
    how = "fastdw.depthwise_conv2d + F.conv2d 1x1"
    try:
        from fastdw.separable import backend_for, depthwise_separable_conv2d
        out = depthwise_separable_conv2d(x, dw, None, pw, None, padding=0)
        how = f"fastdw.depthwise_separable_conv2d ({backend_for(x, dw)[0]})"
    except ImportError:
        out = torch.nn.functional.conv2d(mid, pw)
    for name, got, fn, inputs in (
            ("depthwise", mid, lambda x_, w_: reference.depthwise_conv2d(x_, w_, padding=0),
             [x, dw]),
            ("pointwise", out, lambda x_, w_, p_: reference.depthwise_separable_conv2d(
                x_, w_, None, p_, None, padding=0), [x, dw, pw])):
        verdict = accuracy.compare(got, accuracy.expected(fn, inputs)[0])
        if not verdict.ok:
            raise RuntimeError(verdict.message(f"{name} output vs fastdw.reference"))
    maps = [x[0].mean(0), mid[0].abs().mean(0), out[0].mean(0)]
    return [m.detach().numpy() for m in maps], how


def run(args, parser) -> int:
    if args.image and not os.path.isfile(args.image):
        parser.error(f"--image: no such file: {args.image}")
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        parser.error(f"--out: folder {folder} does not exist")
    try:
        img = load_image(args.image) if args.image else synthetic_image(args.size)
    except (OSError, ValueError, SyntaxError) as e:
        parser.error(f"--image: cannot read {args.image}: {e}")
    maps, how = features(img, args.channels_out, args.seed)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = [f"input: mean over {img.shape[0]} channels",
              "depthwise 3x3: mean |output|\n(" + ", ".join(EDGE_FILTERS) + ")",
              f"pointwise 1x1 (3 -> {args.channels_out}):\nmean over channels"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    for ax, m, title in zip(axes, maps, titles):
        im = ax.imshow(m, cmap="viridis")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    source = os.path.basename(args.image) if args.image else f"synthetic {args.size}x{args.size}"
    fig.suptitle(f"{source}: depthwise keeps each channel's structure, pointwise mixes "
                 f"channels (computed with {how})", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    print(f"wrote {args.out} ({source}, {img.shape[1]}x{img.shape[2]}; {how})")
    return 0

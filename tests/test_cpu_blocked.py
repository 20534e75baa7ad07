"""The CPU kernels with a work decomposition of their own, forced (fastdw.planner.force) on the
shapes that exercise it, in every ISA copy this CPU runs: channel_blocks (csrc/cpu/
forward_blocked.inc, backward_weight_blocked.inc: channel tails, several channel groups, strips,
ring wrap-around with stride and dilation, NCHW rows narrower than a block, NCHW whole planes)
and nhwc_tiles (csrc/cpu/forward_nhwc.inc: tiles of 1, 2 and 4 channel blocks, row remainders,
borders, rows too narrow for a tile), and nchw_planes' stride-2 backward-input (csrc/cpu/
backward_input_nchw.inc: interleaved phases, blocks of 4 vectors and the remainder, odd widths,
both pad parities), and nhwc_tiles' bfloat16 channel pairs (bit for bit the float32 tiles
rounded). The padding-beyond-the-kernel shapes are also the regression test for a lost grad_bias
(rows no tap reaches). The shared config table runs through every kernel in
tests/test_planner_routes.py."""
import pytest
import torch

import fastdw
from fastdw import planner
from tests.support import isas
from tests.support.configs import Conv
from tests.support.reference_check import check_against_reference
from tests.support.threads import per_thread_count

LAYOUTS = ["nchw", "channels_last"]

BLOCKED_CONFIGS = [
    Conv(2, 16, 12, 13),                                               # one full block
    Conv(1, 17, 9, 11, kh=5, kw=5, padding=(2, 2)),                    # a 1-lane tail block
    Conv(2, 40, 15, 14, kh=7, kw=7, padding=(3, 3)),                   # 2.5 blocks, 7x7
    Conv(1, 33, 16, 16, stride=(2, 2)),                                # stride 2
    Conv(1, 20, 17, 19, kh=3, kw=5, stride=(3, 2), padding=(2, 1)),    # rectangular, mixed
    Conv(2, 24, 14, 14, dilation=(2, 3), padding=(2, 3)),              # dilation: ring > 3 rows
    Conv(1, 18, 6, 7, kh=3, kw=3, padding=(4, 5)),                     # padding > kernel
    Conv(1, 200, 9, 300, kh=3, kw=3),                                  # many channel groups
    Conv(3, 48, 30, 7, kh=9, kw=9, padding=(4, 4)),                    # generic-size taps
    Conv(1, 32, 1, 1, kh=1, kw=1, padding=(0, 0)),                     # 1x1 image, 1x1 kernel
    # Whole 16-channel blocks with stride, dilation, wide padding and 7x7 on a 7x7 image.
    Conv(2, 32, 15, 17, stride=(2, 2)),
    Conv(1, 64, 12, 11, kh=5, kw=5, dilation=(2, 2), padding=(4, 4)),
    Conv(1, 16, 9, 9, kh=3, kw=3, padding=(4, 5)),
    Conv(2, 48, 7, 7, kh=7, kw=7, padding=(3, 3)),
    # NCHW rows narrower than a block: whole-vector reads past the row end (planes of >= 16
    # elements), the last channel of the tensor read only to its end, and planes under 16.
    Conv(1, 16, 4, 5, padding=(1, 1)),
    Conv(2, 32, 3, 3, stride=(2, 2)),
    # NCHW forward on whole planes (one block per item, at least 4 items per thread: 16-24 items, so
    # at up to 4 threads; padded image up to 128 KiB): 7-wide rows and a tail block, a 1-lane tail
    # with stride 2 and a rectangular kernel, dilation, padding beyond the kernel, planes under 16
    # pixels, input rows and columns no tap reaches (stride 3 without padding).
    Conv(8, 40, 7, 7),
    Conv(8, 33, 13, 11, kh=3, kw=5, stride=(2, 2), padding=(1, 2)),
    Conv(8, 32, 12, 12, dilation=(2, 2), padding=(2, 2)),
    Conv(16, 16, 9, 9, padding=(4, 5)),
    Conv(16, 16, 3, 2, kh=5, kw=5, padding=(2, 2)),
    Conv(16, 16, 8, 8, stride=(3, 3), padding=(0, 0)),
]


# nhwc_pixels' weight gradient at stride 2 visits each chunk a few rows at a time: 10 blocks make
# chunks of 5 rows, 35-pixel rows visits of 2 rows (2 + 2 + 1).
WEIGHT_VISITS = Conv(2, 160, 30, 70, stride=(2, 2))

# Shapes for the in-place channels_last forward: its channel groups (4, 2, 1 full blocks and a
# partial block), tiles and row remainders, borders on both sides, rows with no interior pixel,
# padding beyond the kernel, and image rows that no tap reaches. Backward-input with stride 1
# runs it too (a convolution with the flipped kernel).
DIRECT_CONFIGS = [
    Conv(2, 16, 9, 30),                                                # one block, long rows
    Conv(1, 32, 11, 12, kh=5, kw=5, padding=(2, 2)),                   # a group of 2
    Conv(2, 64, 8, 9, kh=7, kw=7, padding=(3, 3)),                     # a group of 4
    Conv(1, 120, 7, 13),                                               # 4 + 2 + 1 + 8-lane tail
    Conv(2, 5, 6, 7, kh=5, kw=5, padding=(2, 2), stride=(2, 2)),       # only a partial block
    Conv(1, 80, 13, 15, stride=(2, 2)),                                # 4 + 1, stride 2
    Conv(1, 48, 12, 29, kh=7, kw=7, padding=(3, 3), stride=(2, 2)),    # 2 + 1, stride 2, 7x7
    Conv(1, 64, 5, 2, kh=7, kw=7, padding=(3, 3)),                     # no interior pixel
    Conv(1, 16, 6, 7, padding=(4, 5)),                                 # padding beyond kernel
    Conv(2, 32, 9, 10, kh=5, kw=5, padding=(0, 0)),                    # no padding
    Conv(1, 16, 1, 17, padding=(1, 1), bias=False),                    # H = 1
    # float sliding windows (nhwc_windows, forced here): 8 + 4 + 2 + 1 pixels.
    Conv(1, 80, 6, 17),
    Conv(2, 64, 5, 20, kh=5, kw=5, padding=(2, 2)),
    Conv(1, 72, 4, 30, kh=7, kw=7, padding=(3, 3)),                    # 4 + 0 + 1 + 8-lane tail
    # bfloat16 in pairs of kernel rows (the avx512_bf16 copy, stride 2): 8-pixel windows, the
    # top and bottom borders starting and ending the pairs at odd and even rows.
    Conv(2, 32, 11, 37, kh=5, kw=5, padding=(2, 2), stride=(2, 2)),
    Conv(1, 16, 8, 21, kh=3, kw=3, padding=(1, 1), stride=(2, 2)),
    WEIGHT_VISITS,
]

# nchw_planes' backward-input at stride 2 (dilation 1): rows of 2 x 4 vectors of phases and a
# remainder, odd widths, even and odd horizontal padding, padding beyond the kernel, rectangular
# kernels, multipliers, a plane narrower than one vector.
STRIDE2_CONFIGS = [
    Conv(1, 3, 9, 150, kh=3, kw=3, padding=(1, 1), stride=(2, 2)),
    Conv(2, 2, 11, 133, kh=5, kw=5, padding=(2, 2), stride=(2, 2)),
    Conv(1, 2, 10, 37, kh=7, kw=7, padding=(3, 3), stride=(2, 2)),
    Conv(1, 3, 8, 21, kh=3, kw=3, padding=(0, 0), stride=(2, 2)),
    Conv(1, 2, 7, 19, kh=3, kw=5, padding=(4, 3), stride=(2, 2)),
    Conv(2, 2, 9, 70, kh=5, kw=3, padding=(1, 2), stride=(2, 2), m=2),
    Conv(1, 4, 5, 3, kh=3, kw=3, padding=(1, 1), stride=(2, 2)),
]

# nhwc_pixels' weight gradient has register tiles for the shapes nhwc_tiles takes.
KERNEL_CONFIGS = {"channel_blocks": BLOCKED_CONFIGS, "nhwc_tiles": DIRECT_CONFIGS,
                  "nhwc_windows": DIRECT_CONFIGS, "nhwc_pixels": DIRECT_CONFIGS,
                  "nchw_planes": STRIDE2_CONFIGS}


@pytest.mark.parametrize("isa", isas.params())
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kernel", list(KERNEL_CONFIGS))
def test_kernel_configs_every_isa_copy(kernel, layout, isa):
    if isa not in isas.supported():
        pytest.skip(f"this CPU cannot run the {isa} copy")
    with planner.force(kernel=kernel, isa=isa):
        for cfg in KERNEL_CONFIGS[kernel]:
            for dtype in (torch.float32, torch.bfloat16, torch.float16):
                check_against_reference(cfg, dtype, layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kernel", list(KERNEL_CONFIGS))
def test_kernel_agrees_with_the_general_kernels(kernel, layout):
    """The forced kernel and the any-geometry kernel of the layout give the same values and
    strides (different summation orders: close, not equal)."""
    x, w, b = Conv(2, 35, 13, 12, kh=5, kw=5, padding=(2, 2), stride=(2, 2)).make(
        dtype=torch.float32, channels_last=layout == "channels_last")
    general = "nhwc_pixels" if layout == "channels_last" else "nchw_planes"
    with planner.force(kernel=kernel):
        on = fastdw.depthwise_conv2d(x, w, b, stride=2, padding=2)
    with planner.force(kernel=general):
        off = fastdw.depthwise_conv2d(x, w, b, stride=2, padding=2)
    torch.testing.assert_close(on, off, rtol=1e-5, atol=1e-5)
    assert on.stride() == off.stride()


@pytest.mark.parametrize("isa", isas.params())
def test_bfloat16_tiles_are_the_float32_tiles_rounded(isa):
    """nhwc_tiles reads bfloat16 in channel pairs (groups of 2 and 4 blocks) into the same float
    sums as its float32 path: products of bfloat16 values are exact in float and the taps are
    added in the same order, so its output is the float32 tiles' output rounded to nearest even,
    bit for bit, including the pixels that NaN and Inf inputs reach. The shapes give groups of 4,
    2 and 1 blocks and a partial block, interior tiles, borders, both strides and bias or none."""
    if isa not in isas.supported():
        pytest.skip(f"this CPU cannot run the {isa} copy")
    for cfg in [Conv(2, 120, 9, 23), Conv(1, 96, 11, 17, kh=5, kw=5, padding=(2, 2), stride=(2, 2)),
                Conv(1, 64, 8, 15, kh=7, kw=7, padding=(3, 3), bias=False)]:
        x, w, b = cfg.make(dtype=torch.bfloat16, channels_last=True)
        x[0, 5, 3, 4] = float("nan")
        x[0, 40, 2, 7] = float("inf")
        x[-1, cfg.c - 1, 4, 0] = -float("inf")
        with planner.force(kernel="nhwc_tiles", isa=isa):
            got = fastdw.depthwise_conv2d(x, w, b, **cfg.conv_args)
            want = fastdw.depthwise_conv2d(x.float(), w.float(), None if b is None else b.float(),
                                           **cfg.conv_args).to(torch.bfloat16)
        assert got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def test_nchw_whole_planes_and_ring_give_the_same_bits():
    """channel_blocks' NCHW forward converts a block's whole padded image at once when every
    thread gets at least 4 items of one block (here at 1 thread), and a ring of rows otherwise
    (strips of rows, here at 3 threads): the same sums in the same order, so the same bits, in
    float32 and bfloat16, for the forward and the stride-1 backward-input (its flipped forward)."""
    cfg = Conv(2, 40, 14, 13, kh=5, kw=5, padding=(2, 2))
    for dtype in (torch.float32, torch.bfloat16):
        x, w, b = cfg.make(dtype=dtype)
        g = torch.randn(cfg.out_shape, dtype=dtype)
        with planner.force(kernel="channel_blocks"):
            outs = per_thread_count(lambda: (
                fastdw.depthwise_conv2d(x, w, b, **cfg.conv_args),
                torch.ops.fastdw.depthwise_conv2d_backward_input(
                    g, w, list(x.shape), list(cfg.stride), list(cfg.padding),
                    list(cfg.dilation))), counts=(1, 3))
        for a, c in zip(*outs):
            assert torch.equal(a, c)


def test_weight_gradient_visits_keep_their_bits_for_any_thread_count():
    """At stride 2 nhwc_pixels' weight gradient passes each block's sums through its partials
    between visits of a few rows, and a thread's range of items may start or end inside a chunk:
    the result keeps its bits for 1, 2 and 3 threads."""
    cfg = WEIGHT_VISITS
    x, w, _ = cfg.make(dtype=torch.float32, channels_last=True)
    g = torch.randn(cfg.out_shape).contiguous(memory_format=torch.channels_last)
    with planner.force(kernel="nhwc_pixels"):
        outs = per_thread_count(lambda: torch.ops.fastdw.depthwise_conv2d_backward_weight(
            g, x, list(w.shape), list(cfg.stride), list(cfg.padding), list(cfg.dilation)))
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert torch.equal(a, b)

"""The channel-blocked CPU kernels, forced on wherever they apply: the ring kernels
(csrc/cpu/blocked.inc) and the in-place channels_last forward (csrc/cpu/direct_nhwc.inc).

In normal use they run only on the shapes where they measured faster (depthwise_cpu.cpp,
blocked_forward_wins, direct_forward_wins); FASTDW_CPU_BLOCKED=1 or =direct (read on every call)
sends every eligible call to one of them, so here they see the whole config table plus the shapes
that exercise their own decomposition: channel tails, several channel groups, strips, ring
wrap-around with stride and dilation, tiles of 1, 2 and 4 channel blocks, rows too narrow for a
tile, and every instruction-set build. The padding-beyond-the-kernel shapes are also the
regression test for a lost grad_bias (rows no tap reaches). The in-place kernel only takes
channels_last, multiplier 1, dilation 1, square 3/5/7 kernels and stride 1 or 2; other calls in
that mode run the default kernels."""
import pytest
import torch

import fastdw
from tests.support.child import check_configs_on_isa
from tests.support.configs import CONFIGS, Conv
from tests.support.reference_check import check_against_reference

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
]


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
    # float sliding tiles (stride 1, >= 64 channels, rows of >= 14): 8 + 4 + 2 + 1 pixels.
    Conv(1, 80, 6, 17),
    Conv(2, 64, 5, 20, kh=5, kw=5, padding=(2, 2)),
    Conv(1, 72, 4, 30, kh=7, kw=7, padding=(3, 3)),                    # 4 + 0 + 1 + 8-lane tail
]

MODES = ["1", "direct"]


@pytest.fixture(params=MODES, ids=["ring", "direct"])
def blocked_forced(request, monkeypatch):
    monkeypatch.setenv("FASTDW_CPU_BLOCKED", request.param)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cfg", BLOCKED_CONFIGS + DIRECT_CONFIGS + CONFIGS, ids=str)
def test_blocked_matches_reference(cfg, layout, dtype, blocked_forced):
    check_against_reference(cfg, dtype, layout)


@pytest.mark.slow
@pytest.mark.parametrize("stride", [(1, 1), (2, 1)], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_blocked_gradcheck_float32_path(layout, stride, blocked_forced):
    """float64 never runs the blocked kernels (they compute in float); their gradients are
    checked against float64 finite differences through the float32 op instead."""
    cfg = Conv(1, 18, 7, 8, kh=3, kw=3, stride=stride)
    x, w, b = cfg.make(dtype=torch.float32, channels_last=layout == "channels_last")
    x64, w64, b64 = (t.double().requires_grad_() for t in (x, w, b))

    def f(x64, w64, b64):
        # The fastdw op in float32, lifted to float64 for gradcheck's arithmetic.
        return fastdw.depthwise_conv2d(x64.float(), w64.float(), b64.float(),
                                       **cfg.conv_args).double()
    torch.autograd.gradcheck(f, (x64, w64, b64), eps=1e-2, atol=5e-3, rtol=5e-3)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_blocked_same_bits_for_any_thread_count(layout, blocked_forced):
    """The work split (groups, strips) follows the thread count; each output is still computed
    by one work item with the same order of taps, so the bits do not change."""
    x, w, b = Conv(3, 40, 23, 21, kh=5, kw=5, padding=(2, 2)).make(
        dtype=torch.float32, channels_last=layout == "channels_last")
    threads = torch.get_num_threads()
    try:
        outs = []
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            outs.append(fastdw.depthwise_conv2d(x, w, b, padding=2))
    finally:
        torch.set_num_threads(threads)
    for out in outs[1:]:
        assert torch.equal(out, outs[0])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_blocked_off_and_on_agree(layout, mode, monkeypatch):
    x, w, b = Conv(2, 35, 13, 12, kh=5, kw=5, padding=(2, 2), stride=(2, 2)).make(
        dtype=torch.float32, channels_last=layout == "channels_last")
    monkeypatch.setenv("FASTDW_CPU_BLOCKED", mode)
    on = fastdw.depthwise_conv2d(x, w, b, stride=2, padding=2)
    monkeypatch.setenv("FASTDW_CPU_BLOCKED", "0")
    off = fastdw.depthwise_conv2d(x, w, b, stride=2, padding=2)
    torch.testing.assert_close(on, off, rtol=1e-5, atol=1e-5)
    assert on.stride() == off.stride()


def _available_isas():
    from fastdw import _C
    best = _C.cpu_isa()
    return {"avx512": ["generic", "avx2", "avx512"], "avx2": ["generic", "avx2"],
            "generic": ["generic"]}[best]


@pytest.mark.subprocess
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_blocked_every_isa_build(isa, mode):
    """Each instruction-set build of the blocked kernels (its own vector width and unroll),
    in a subprocess because the ISA is chosen once per process."""
    if isa not in _available_isas():
        pytest.skip(f"this CPU cannot run the {isa} build")
    check_configs_on_isa(isa, BLOCKED_CONFIGS + DIRECT_CONFIGS,
                         ["float32", "bfloat16", "float16"], FASTDW_CPU_BLOCKED=mode)

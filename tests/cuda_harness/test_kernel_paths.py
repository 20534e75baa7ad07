"""Every kernel path of csrc/cuda, run in the simulator against the float64 F.conv2d reference:
each (kernel size, stride) case of FASTDW_SPECIALIZATIONS, the runtime-size (large-kernel) and
generic cases, channel-vector and scalar channels_last kernels, the 64-bit-index fallbacks,
the two-pass weight gradient, in every dtype and both layouts. The last test checks that every
kernel instantiation the host code can launch did run."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from tests.support.strategies import depthwise_convs
from tests.support.configs import CONFIGS, Conv
from tests.cuda_harness import build
from tests.cuda_harness.harness import DTYPES, LAYOUTS, check_conv


def _variant_configs():
    # Each (K, S) of the kernel switch twice: 8 channels, multiplier 1 (channels_last takes the
    # channel-vector kernels) and 3 channels, multiplier 2 (the one-channel kernels).
    cfgs = []
    for k in (3, 5, 7):
        for s in (1, 2):
            cfgs.append(Conv(2, 8, 11, 21, kh=k, kw=k, stride=(s, s), padding=(k // 2, k // 2)))
            cfgs.append(Conv(1, 3, 10, 13, kh=k, kw=k, m=2, stride=(s, s),
                             padding=(k // 2, k // 2), bias=False))
    cfgs += [
        Conv(2, 8, 9, 19, kh=4, kw=2, padding=(1, 1)),                          # K=0 S=1
        Conv(1, 3, 12, 14, kh=9, kw=11, m=2, padding=(4, 5)),                    # K=0 S=1
        Conv(2, 8, 12, 17, stride=(2, 1), dilation=(1, 2), padding=(2, 1)),      # K=0 S=0
        Conv(1, 3, 13, 11, kh=5, kw=3, m=2, stride=(3, 3), padding=(2, 1)),      # K=0 S=0
    ]
    return cfgs


# Tile geometry: several tiles per plane, stacked planes, odd and strided edges, tile origins
# shifted by the stride parity, large kernels (the chunked path), wide and tall kernels.
GEOMETRY_CONFIGS = [
    Conv(2, 4, 9, 70),
    Conv(1, 2, 5, 140, kh=5, kw=5, padding=(2, 2)),
    Conv(3, 24, 7, 7),
    Conv(2, 16, 14, 14, kh=5, kw=5, stride=(2, 2), padding=(2, 2)),
    Conv(1, 2, 5, 67, stride=(2, 2)),
    Conv(1, 4, 9, 9, stride=(2, 2), padding=(0, 0)),
    Conv(1, 8, 21, 25, kh=5, kw=5, stride=(2, 2), padding=(1, 1)),
    Conv(2, 6, 12, 16, kh=7, kw=7, m=2, padding=(3, 3)),
    Conv(1, 3, 40, 36, kh=31, kw=31, padding=(15, 15)),
    Conv(1, 5, 30, 12, kh=51, kw=5, padding=(25, 2)),
    Conv(1, 5, 12, 30, kh=5, kw=51, padding=(2, 25)),
    Conv(1, 4, 20, 20, kh=9, kw=9, stride=(2, 2), padding=(4, 4)),
    Conv(1, 2, 3, 260, kh=1, kw=31, padding=(0, 15)),
] + CONFIGS

# Images of at least build.INDEX32_LIMIT elements: the 64-bit kernels (direct forward and
# backward-input, int64 tap-owner weight gradient), in both layouts.
FALLBACK_CONFIGS = [
    Conv(1, 2, 127, 130),
    Conv(1, 2, 130, 128, kh=3, kw=5, m=2, stride=(2, 1), dilation=(1, 2), padding=(1, 2)),
]
assert all(min(c.h * c.w, c.c * c.h * c.w) >= build.INDEX32_LIMIT for c in FALLBACK_CONFIGS)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cfg", _variant_configs(), ids=str)
def test_kernel_variants(sim, cfg, layout, dtype):
    check_conv(sim, cfg, dtype, layout)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cfg", FALLBACK_CONFIGS, ids=str)
def test_64bit_fallbacks(sim, cfg, layout, dtype):
    check_conv(sim, cfg, dtype, layout)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cfg", GEOMETRY_CONFIGS, ids=str)
def test_tile_geometry(sim, cfg, layout, dtype):
    check_conv(sim, cfg, dtype, layout)


# Pointers aligned to 1, 2 or 3 elements: the host code must not pick a vector path whose
# loads (Pack<T, N>, alignas(N * sizeof(T))) the pointer does not allow; UBSan reports a
# misaligned access. Widths that are multiples of every vector width, so only the pointer
# decides.
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("offset", [1, 2, 3])
@pytest.mark.parametrize("cfg", [Conv(2, 8, 9, 16), Conv(1, 16, 8, 16, kh=5, kw=5, padding=(2, 2))],
                         ids=str)
def test_misaligned_pointers(sim, cfg, layout, dtype, offset):
    check_conv(sim, cfg, dtype, layout, offset)


@settings(max_examples=60)
@given(cfg=depthwise_convs(max_kernel=9, max_extra_h=14, max_extra_w=40, max_channel_groups=6),
       layout=st.sampled_from(LAYOUTS),
       dtype=st.sampled_from([torch.float64, torch.float32, torch.float16]))
def test_random_configs(sim, cfg, layout, dtype):
    check_conv(sim, cfg, dtype, layout)


def test_every_launchable_kernel_ran(sim):
    """The registry lists each kernel instantiation that csrc/cuda's host code can launch (a
    static registration in launch_kernel): every one must have run in the tests above. Runs last
    in this module and counts the launches of the whole session."""
    launches = dict(sim.kernel_launches())
    kernels = {k: n for k, n in launches.items() if k.startswith("fastdw::")}
    assert len(kernels) > 100, f"only {len(kernels)} kernels registered"
    never = sorted(k for k, n in kernels.items() if n == 0)
    assert not never, f"{len(never)} of {len(kernels)} launchable kernels never ran:\n" + \
        "\n".join(never)

"""Every CPU planner route, forced once over the shared configs (tests/configs.py): each kernel of
the planner (fastdw.planner.kernels(), PyTorch's own `aten` included) wherever it applies, in
every dtype and both layouts, against the float64 reference; float64 gradcheck through every
kernel that computes in float64, and through the float32 op for the float-only ones; the same
bits for any thread count; and every ISA copy this CPU runs on the kernels' own shape tables
(tests/test_cpu_blocked.py).

A forced kernel runs every pass it applies to (the rules take the others), so each test first
asks the planner which passes it takes and fails if it takes none of a config it should."""
import pytest
import torch

import fastdw
from fastdw import planner
from tests.support import isas
from tests.support.configs import CONFIGS, Conv, pick
from tests.support.reference_check import check_against_reference
from tests.support.threads import per_thread_count

LAYOUTS = ["nchw", "channels_last"]
KERNELS = list(planner.kernels())
PASSES = planner.PASSES
FLOAT64_KERNELS = ["aten", "nchw_planes", "nhwc_pixels"]


@pytest.fixture
def one_thread():
    """gradcheck makes thousands of tiny calls: on one thread they do not wait at the thread
    pool's barriers (which on a loaded 2-core machine dominate); thread counts have their own
    test below."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def taken_passes(cfg, layout, dtype, kernel):
    """The passes on which the forced kernel runs for cfg (explain under force)."""
    x, w, _ = cfg.make(dtype=dtype, channels_last=layout == "channels_last")
    taken = []
    with planner.force(kernel=kernel):
        for p in PASSES:
            plan = planner.explain(x, w, pass_=p, **cfg.conv_args)
            if plan.kernel == kernel:
                assert plan.source == "forced", plan
                taken.append(p)
            else:
                assert plan.note, f"{kernel} not taken for {p} but no reason given: {plan}"
    return taken


def test_every_kernel_is_forced_somewhere():
    """Each kernel takes at least one pass of at least one shared config in each layout it
    serves, so the route tests below exercise it."""
    for kernel in KERNELS:
        taken = set()
        for cfg in CONFIGS:
            for layout in LAYOUTS:
                taken.update(taken_passes(cfg, layout, torch.float32, kernel))
        forward_only = kernel in ("aten", "nhwc_tiles", "nhwc_windows")
        expected = {"fwd", "bwd_input"} if forward_only else set(PASSES)
        assert expected <= taken, f"{kernel} takes only {sorted(taken)}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_forced_kernel_matches_reference(kernel, layout, dtype):
    checked = 0
    for cfg in CONFIGS:
        if not taken_passes(cfg, layout, dtype, kernel):
            continue
        with planner.force(kernel=kernel):
            check_against_reference(cfg, dtype, layout)
        checked += 1
    assert checked, f"{kernel} applies to none of the shared configs in {layout} {dtype}"


# A few configs per float64 kernel: gradcheck is slow, and the shared table is already checked
# against the float64 reference above.
GRADCHECK_CONFIGS = pick("odd_3x3", "stride2", "dilation2", "multiplier2", "padding_beyond_half")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kernel", FLOAT64_KERNELS)
def test_forced_kernel_gradcheck_float64(kernel, layout, one_thread):
    for cfg in GRADCHECK_CONFIGS:
        if not taken_passes(cfg, layout, torch.float64, kernel):
            continue
        x, w, b = cfg.make(channels_last=layout == "channels_last", requires_grad=True)
        with planner.force(kernel=kernel):
            assert torch.autograd.gradcheck(
                lambda x, w, b: fastdw.depthwise_conv2d(x, w, b, **cfg.conv_args), (x, w, b))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kernel", ["nhwc_tiles", "nhwc_windows", "channel_blocks"])
def test_forced_float_kernel_gradcheck(kernel, layout, one_thread):
    """The float-only kernels never see float64: their gradients are checked against float64
    finite differences through the float32 op."""
    for stride in [(1, 1), (2, 2)]:
        cfg = Conv(1, 18, 6, 7, kh=3, kw=3, stride=stride)
        x, w, b = cfg.make(dtype=torch.float32, channels_last=layout == "channels_last")
        assert taken_passes(cfg, layout, torch.float32, kernel)
        x64, w64, b64 = (t.double().requires_grad_() for t in (x, w, b))

        def f(x64, w64, b64):
            return fastdw.depthwise_conv2d(x64.float(), w64.float(), b64.float(),
                                           **cfg.conv_args).double()
        with planner.force(kernel=kernel):
            torch.autograd.gradcheck(f, (x64, w64, b64), eps=1e-2, atol=5e-3, rtol=5e-3)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_forced_kernel_same_bits_for_any_thread_count(kernel, layout):
    """fastdw's kernels split their work by the thread count, never their sums: forward and both
    gradients keep their bits for 1, 2 and 3 threads (aten's forward and backward-input too, on
    this build; aten is never used for backward-weight)."""
    cfg = Conv(3, 40, 23, 21, kh=5, kw=5, padding=(2, 2))
    x, w, b = cfg.make(dtype=torch.float32, channels_last=layout == "channels_last")
    g = torch.randn(3, 40, 23, 21).contiguous(
        memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
    with planner.force(kernel=kernel):
        outs = per_thread_count(lambda: (
            fastdw.depthwise_conv2d(x, w, b, **cfg.conv_args),
            torch.ops.fastdw.depthwise_conv2d_backward_input(
                g, w, list(x.shape), [1, 1], [2, 2], [1, 1]),
            *torch.ops.fastdw.depthwise_conv2d_backward_weight(
                g, x, list(w.shape), [1, 1], [2, 2], [1, 1])))
    for other in outs[1:]:
        for a, b_ in zip(outs[0], other):
            assert torch.equal(a, b_)


@pytest.mark.parametrize("isa", isas.params())
def test_every_isa_copy_on_the_shared_configs(isa):
    """Every fastdw kernel's copy for `isa`, forced in-process, over the shared configs in
    float32 and bfloat16 (the float64 paths go through the same source)."""
    if isa not in isas.supported():
        pytest.skip(f"this CPU cannot run the {isa} copy")
    with planner.force(isa=isa):
        assert fastdw.backends.cpu.isa == isa
        for kernel in [k for k in KERNELS if k != "aten"]:
            for cfg in CONFIGS[::2]:
                for layout in LAYOUTS:
                    for dtype in (torch.float32, torch.bfloat16):
                        if taken_passes(cfg, layout, dtype, kernel):
                            with planner.force(kernel=kernel):
                                check_against_reference(cfg, dtype, layout)

"""The CPU kernels vs the float64 F.conv2d reference: gradcheck, dtypes, layouts, opcheck,
torch.compile, random configs."""
import pytest
import torch
from hypothesis import given, strategies as st

import fastdw
from fastdw import reference
from tests.support.configs import CONFIGS, CONV, Conv, pick
from tests.support.reference_check import (as_layout, assert_close_to_reference,
                                           check_against_reference)

LAYOUTS = ["nchw", "channels_last"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_gradcheck_float64(cfg, layout):
    x, w, b = cfg.make(channels_last=(layout == "channels_last"), requires_grad=True)
    inputs = (x, w) if b is None else (x, w, b)

    def fn(x, w, b=None):
        return fastdw.depthwise_conv2d(x, w, b, **cfg.conv_args)

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("cfg", pick("odd_3x3", "stride2", "multiplier2", "rect_dilation"), ids=str)
def test_gradgradcheck_float64(cfg):
    x, w, b = cfg.make(requires_grad=True)
    inputs = (x, w) if b is None else (x, w, b)

    def fn(x, w, b=None):
        return fastdw.depthwise_conv2d(x, w, b, **cfg.conv_args)

    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_matches_reference(cfg, layout, dtype):
    check_against_reference(cfg, dtype, layout)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cfg", [Conv(2, 32, 28, 28), Conv(1, 16, 33, 31, kh=7, kw=7, padding=(3, 3)),
                                 Conv(2, 24, 30, 30, stride=(2, 2), m=2)], ids=str)
def test_matches_reference_larger(cfg, dtype):
    for layout in LAYOUTS:
        check_against_reference(cfg, dtype, layout)


def _noncontiguous_variants(cfg):
    x, w, b = cfg.make()
    wide = torch.randn(cfg.n, cfg.c, cfg.h, 2 * cfg.w, dtype=torch.float64)[..., ::2]
    wide.copy_(x)
    yield "sliced_w", wide
    nhwc = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    yield "permuted_nhwc", nhwc
    chans = torch.randn(cfg.n, 2 * cfg.c, cfg.h, cfg.w, dtype=torch.float64)[:, ::2]
    chans.copy_(x)
    yield "strided_channels", chans
    swapped = x.transpose(2, 3).contiguous().transpose(2, 3)
    yield "transposed_hw", swapped


@pytest.mark.parametrize("cfg", pick("odd_3x3", "stride2", "multiplier3_stride2"), ids=str)
def test_noncontiguous_inputs(cfg):
    _, w, b = cfg.make()
    for name, x in _noncontiguous_variants(cfg):
        assert not x.is_contiguous() or name == "permuted_nhwc"
        xr = x.clone().requires_grad_()
        ref = reference.depthwise_conv2d(xr, w, b, **cfg.conv_args)
        xf = x.detach().requires_grad_()
        out = fastdw.depthwise_conv2d(xf, w, b, **cfg.conv_args)
        assert_close_to_reference(out, ref, torch.float64, f"{cfg} {name}")
        g = torch.randn_like(ref)
        ref.backward(g)
        out.backward(g)
        assert_close_to_reference(xf.grad, xr.grad, torch.float64, f"{cfg} {name} grad_input")
    # Non-contiguous weight and bias, and a non-contiguous grad_output.
    x, _, _ = cfg.make()
    w_nc = torch.randn(w.shape[0], 1, w.shape[3], w.shape[2], dtype=torch.float64).transpose(2, 3)
    w_nc.copy_(w)
    assert_close_to_reference(fastdw.depthwise_conv2d(x, w_nc, b, **cfg.conv_args),
                              reference.depthwise_conv2d(x, w, b, **cfg.conv_args),
                              torch.float64, f"{cfg} non-contiguous weight")


@pytest.mark.parametrize("cfg", pick("odd_3x3", "stride2", "multiplier3_stride2"), ids=str)
def test_gradcheck_noncontiguous(cfg):
    _, w, b = cfg.make()
    for name, x in _noncontiguous_variants(cfg):
        # detach() keeps the view's strides: the op still sees the non-contiguous layout.
        x = x.detach().requires_grad_()
        w_ = w.detach().requires_grad_()

        def fn(x, w):
            return fastdw.depthwise_conv2d(x, w, b, **cfg.conv_args)

        assert torch.autograd.gradcheck(fn, (x, w)), name


@pytest.mark.parametrize("padding,stride,kernel,dilation", [
    ("same", 1, (3, 3), 1), ("same", 1, (4, 4), 1), ("same", 1, (2, 5), (1, 2)),
    ("valid", 1, (3, 3), 1), ("valid", (2, 1), (3, 5), 1)])
def test_string_padding(padding, stride, kernel, dilation):
    x = torch.randn(2, 3, 9, 10, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 1, *kernel, dtype=torch.float64, requires_grad=True)
    out = fastdw.depthwise_conv2d(x, w, None, stride, padding, dilation)
    ref = reference.depthwise_conv2d(x, w, None, stride, padding, dilation)
    assert_close_to_reference(out, ref, torch.float64, f"padding={padding}")
    assert torch.autograd.gradcheck(
        lambda x, w: fastdw.depthwise_conv2d(x, w, None, stride, padding, dilation), (x, w))


def test_unbatched_input():
    x = torch.randn(4, 7, 8, dtype=torch.float64)
    w = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    out = fastdw.depthwise_conv2d(x, w, padding=1)
    assert out.shape == (4, 7, 8)
    assert_close_to_reference(out, reference.depthwise_conv2d(x, w, padding=1), torch.float64,
                              "unbatched")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_empty_batch(layout):
    x = as_layout(torch.randn(0, 3, 8, 8), layout).requires_grad_()
    w = torch.randn(6, 1, 3, 3, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    out = fastdw.depthwise_conv2d(x, w, b, padding=1)
    ref = reference.depthwise_conv2d(x, w, b, padding=1)
    assert out.shape == ref.shape == (0, 6, 8, 8)
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_deterministic(layout):
    cfg = Conv(3, 16, 20, 18, kh=5, kw=5, padding=(2, 2), m=2)
    results = []
    for _ in range(2):
        x, w, b = cfg.make(dtype=torch.float32, channels_last=(layout == "channels_last"),
                           requires_grad=True)
        out = fastdw.depthwise_conv2d(x, w, b, **cfg.conv_args)
        out.backward(torch.ones_like(out))
        results.append([out.detach(), x.grad, w.grad, b.grad])
    for a, b_ in zip(*results):
        assert torch.equal(a, b_)


_OPCHECK_CONFIGS = pick("odd_3x3", "stride2", "multiplier2", "no_bias")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cfg", _OPCHECK_CONFIGS, ids=str)
def test_opcheck(cfg, layout):
    x, w, b = cfg.make(dtype=torch.float32, channels_last=(layout == "channels_last"),
                       requires_grad=True)
    args = (cfg.stride, cfg.padding, cfg.dilation)
    torch.library.opcheck(torch.ops.fastdw.depthwise_conv2d, (x, w, b) + tuple(map(list, args)))
    out = torch.ops.fastdw.depthwise_conv2d(x, w, b, *map(list, args)).detach()
    g = torch.randn_like(out)
    torch.library.opcheck(torch.ops.fastdw.depthwise_conv2d_backward_input,
                          (g, w.detach(), list(x.shape)) + tuple(map(list, args)))
    torch.library.opcheck(torch.ops.fastdw.depthwise_conv2d_backward_weight,
                          (g, x.detach(), list(w.shape)) + tuple(map(list, args)))


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    cfg = Conv(2, 8, 12, 12, m=2)
    x, w, b = cfg.make(dtype=torch.float32, requires_grad=True)

    def block(x, w, b):
        return torch.relu(fastdw.depthwise_conv2d(x, w, b, stride=1, padding=1)) * 2

    compiled = torch.compile(block, fullgraph=True, backend="inductor")
    out = compiled(x, w, b)
    ref = block(x, w, b)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = b.grad = None
    ref.sum().backward()
    assert torch.allclose(gx, x.grad, rtol=1e-5, atol=1e-5)
    assert torch.allclose(gw, w.grad, rtol=1e-4, atol=1e-4)


@st.composite
def _random_conv(draw):
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh + 1)), draw(st.integers(0, kw + 1))
    # Smallest input the dilated kernel fits in, then a little more.
    h = max(1, dh * (kh - 1) + 1 - 2 * ph) + draw(st.integers(0, 9))
    w = max(1, dw * (kw - 1) + 1 - 2 * pw) + draw(st.integers(0, 9))
    return Conv(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 5)), h=h, w=w, kh=kh, kw=kw,
                m=draw(st.integers(1, 3)), stride=(sh, sw), padding=(ph, pw),
                dilation=(dh, dw), bias=draw(st.booleans()))


@given(cfg=_random_conv(), layout=st.sampled_from(LAYOUTS),
       dtype=st.sampled_from([torch.float64, torch.float32, torch.bfloat16]))
def test_random_configs(cfg, layout, dtype):
    check_against_reference(cfg, dtype, layout)


def test_isa_reported():
    from fastdw import _C
    assert _C.cpu_isa() in fastdw.planner.isas()


def test_generic_isa_copy_matches_reference():
    """The baseline x86-64 copy (what a CPU without AVX2/FMA/F16C runs) is as correct as the
    wide ones, float64 included, with the default plans."""
    from fastdw import planner
    extra = [Conv(2, 16, 20, 19), Conv(1, 24, 15, 15, kh=5, kw=5, padding=(2, 2), stride=(2, 2))]
    with planner.force(isa="generic"):
        for cfg in CONFIGS + extra:
            for layout in LAYOUTS:
                for dtype in (torch.float64, torch.float32):
                    check_against_reference(cfg, dtype, layout)

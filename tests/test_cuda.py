"""The CUDA kernels vs the float64 F.conv2d reference (computed on the CPU): gradcheck, every
dtype, both layouts, every kernel path (specialised 3x3/5x5/7x7 at stride 1 and 2, the
runtime-size and large-kernel paths, the generic path), CPU agreement, non-contiguous inputs,
determinism, poisoned allocations, empty batches, opcheck. Skipped without a GPU."""
import pytest
import torch
from hypothesis import given, strategies as st

import fastdw
from fastdw import reference
from tests.support.strategies import depthwise_convs
from tests.support.configs import CONFIGS, Conv, pick
from tests.support.reference_check import (as_layout, assert_close_to_reference,
                                           check_against_reference, poison_allocator)

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

LAYOUTS = ["nchw", "channels_last"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
CUDA = "cuda"

# Shapes that reach each compiled variant: (3, 5, 7) x stride (1, 2) with channel counts that
# allow 16-byte channel vectors (channels_last), several tiles per plane, small planes stacked
# in one block, depth multipliers, and the runtime-size paths.
PATH_CONFIGS = [
    Conv(2, 16, 37, 70),
    Conv(2, 16, 37, 70, stride=(2, 2)),
    Conv(1, 8, 33, 66, kh=5, kw=5, padding=(2, 2)),
    Conv(1, 8, 33, 66, kh=5, kw=5, stride=(2, 2), padding=(2, 2)),
    Conv(1, 8, 30, 64, kh=7, kw=7, padding=(3, 3)),
    Conv(1, 8, 30, 64, kh=7, kw=7, stride=(2, 2), padding=(3, 3), bias=False),
    Conv(3, 24, 7, 7),
    Conv(3, 24, 14, 14, kh=5, kw=5, stride=(2, 2), padding=(2, 2)),
    Conv(2, 12, 10, 10, m=2, stride=(2, 2)),
    Conv(2, 8, 12, 16, kh=7, kw=7, m=2, padding=(3, 3)),
    Conv(1, 8, 20, 24, stride=(2, 2), padding=(0, 0)),
    Conv(1, 8, 21, 25, kh=5, kw=5, stride=(2, 2), padding=(1, 1)),
    Conv(1, 2, 5, 301, stride=(2, 2)),
    Conv(1, 2, 3, 260, kh=1, kw=31, padding=(0, 15)),
    Conv(2, 6, 19, 23, kh=4, kw=2, padding=(1, 2)),                  # runtime size, stride 1
    Conv(2, 6, 19, 23, kh=3, kw=3, stride=(2, 1), dilation=(1, 2), padding=(2, 1)),  # generic
]

# The large-kernel path: k >= 9 up to 31x31 and SLaK-style rectangles.
LARGE_CONFIGS = [
    Conv(1, 4, 20, 22, kh=13, kw=13, padding=(6, 6)),
    Conv(2, 8, 16, 16, kh=31, kw=31, padding=(15, 15)),
    Conv(1, 3, 40, 36, kh=31, kw=31, padding=(15, 15)),
    Conv(1, 5, 30, 12, kh=51, kw=5, padding=(25, 2)),
    Conv(1, 5, 12, 30, kh=5, kw=51, padding=(2, 25)),
    Conv(1, 8, 14, 14, kh=13, kw=13, m=2, padding=(6, 6)),
    Conv(1, 4, 20, 20, kh=9, kw=9, stride=(2, 2), padding=(4, 4)),
]


def _out_shape(cfg):
    def size(i, k, axis):
        s, p, d = cfg.stride[axis], cfg.padding[axis], cfg.dilation[axis]
        return (i + 2 * p - d * (k - 1) - 1) // s + 1
    return (cfg.n, cfg.c * cfg.m, size(cfg.h, cfg.kh, 0), size(cfg.w, cfg.kw, 1))


def _to_cuda(*ts):
    return [None if t is None else t.detach().to(CUDA).requires_grad_(t.requires_grad)
            for t in ts]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_gradcheck_float64(cfg, layout):
    x, w, b = cfg.make(channels_last=(layout == "channels_last"), requires_grad=True)
    inputs = tuple(t for t in _to_cuda(x, w, b) if t is not None)

    def fn(x, w, b=None):
        return fastdw.depthwise_conv2d(x, w, b, **cfg.conv_args)

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("cfg", pick("odd_3x3", "stride2", "multiplier2"), ids=str)
def test_gradgradcheck_float64(cfg):
    x, w, b = cfg.make(requires_grad=True)
    inputs = tuple(t for t in _to_cuda(x, w, b) if t is not None)

    def fn(x, w, b=None):
        return fastdw.depthwise_conv2d(x, w, b, **cfg.conv_args)

    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("dtype", [torch.float64] + DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_matches_reference(cfg, layout, dtype):
    check_against_reference(cfg, dtype, layout, CUDA)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cfg", PATH_CONFIGS, ids=str)
def test_kernel_paths(cfg, layout, dtype):
    check_against_reference(cfg, dtype, layout, CUDA)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cfg", LARGE_CONFIGS, ids=str)
def test_large_kernels(cfg, layout, dtype):
    check_against_reference(cfg, dtype, layout, CUDA)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cfg", pick("odd_3x3", "multiplier3_stride2")
                         + [PATH_CONFIGS[1], LARGE_CONFIGS[1]], ids=str)
def test_cpu_and_cuda_agree(cfg, layout):
    x, w, b = cfg.make(dtype=torch.float32, channels_last=(layout == "channels_last"),
                       requires_grad=True)
    xc, wc, bc = _to_cuda(x, w, b)
    out_cpu = fastdw.depthwise_conv2d(x, w, b, **cfg.conv_args)
    out_cuda = fastdw.depthwise_conv2d(xc, wc, bc, **cfg.conv_args)
    torch.testing.assert_close(out_cuda.cpu(), out_cpu, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out_cpu)
    out_cpu.backward(grad)
    out_cuda.backward(grad.to(CUDA))
    torch.testing.assert_close(xc.grad.cpu(), x.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(wc.grad.cpu(), w.grad, rtol=1e-4, atol=1e-4)
    if b is not None:
        torch.testing.assert_close(bc.grad.cpu(), b.grad, rtol=1e-4, atol=1e-4)


def _noncontiguous_variants(x):
    n, c, h, w = x.shape
    wide = torch.randn(n, c, h, 2 * w, dtype=x.dtype, device=x.device)[..., ::2]
    wide.copy_(x)
    yield "sliced_w", wide
    yield "permuted_nhwc", x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    chans = torch.randn(n, 2 * c, h, w, dtype=x.dtype, device=x.device)[:, ::2]
    chans.copy_(x)
    yield "strided_channels", chans
    yield "transposed_hw", x.transpose(2, 3).contiguous().transpose(2, 3)
    yield "offset_view", torch.cat([x.new_zeros(1, c, h, w), x])[1:]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=str)
@pytest.mark.parametrize("cfg", pick("odd_3x3", "stride2", "multiplier3_stride2")
                         + [PATH_CONFIGS[0]], ids=str)
def test_noncontiguous_inputs(cfg, dtype):
    x, w, b = _to_cuda(*cfg.make(dtype=dtype))
    w64, b64 = w.double().cpu(), None if b is None else b.double().cpu()
    for name, xv in _noncontiguous_variants(x):
        xr = xv.detach().double().cpu().requires_grad_()
        ref = reference.depthwise_conv2d(xr, w64, b64, **cfg.conv_args)
        xf = xv.detach().requires_grad_()
        out = fastdw.depthwise_conv2d(xf, w, b, **cfg.conv_args)
        assert_close_to_reference(out, ref, dtype, f"{cfg} {name}")
        g = torch.randn_like(ref).to(dtype)
        ref.backward(g.double())
        # A non-contiguous grad_output too.
        out.backward(g.to(CUDA).transpose(2, 3).contiguous().transpose(2, 3))
        assert_close_to_reference(xf.grad, xr.grad, dtype, f"{cfg} {name} grad_input")
    w_nc = torch.randn(w.shape[0], 1, w.shape[3], w.shape[2], dtype=w.dtype,
                       device=CUDA).transpose(2, 3)
    w_nc.copy_(w)
    assert_close_to_reference(fastdw.depthwise_conv2d(x, w_nc, b, **cfg.conv_args),
                              reference.depthwise_conv2d(x.double().cpu(), w64, b64,
                                                         **cfg.conv_args),
                              dtype, f"{cfg} non-contiguous weight")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_channels_last_stays_channels_last(dtype):
    cfg = Conv(2, 16, 14, 14, kh=5, kw=5, padding=(2, 2))
    x, w, b = _to_cuda(*cfg.make(dtype=dtype, channels_last=True, requires_grad=True))
    out = fastdw.depthwise_conv2d(x, w, b, **cfg.conv_args)
    assert out.is_contiguous(memory_format=torch.channels_last)
    out.backward(torch.randn_like(out))
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    assert w.grad.is_contiguous()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cfg", [Conv(3, 16, 20, 18, kh=5, kw=5, padding=(2, 2), m=2),
                                 Conv(8, 32, 56, 56),
                                 Conv(4, 8, 40, 40, kh=31, kw=31, padding=(15, 15)),
                                 Conv(4, 8, 33, 35, stride=(2, 1), dilation=(2, 2),
                                      padding=(2, 1))], ids=str)
def test_deterministic(cfg, layout):
    x, w, b = _to_cuda(*cfg.make(dtype=torch.float32, channels_last=(layout == "channels_last")))
    g = as_layout(torch.randn(_out_shape(cfg), device=CUDA), layout)
    args = [list(cfg.stride), list(cfg.padding), list(cfg.dilation)]
    first = torch.ops.fastdw.depthwise_conv2d_backward_weight(g, x, list(w.shape), *args)
    for _ in range(3):
        again = torch.ops.fastdw.depthwise_conv2d_backward_weight(g, x, list(w.shape), *args)
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    gi = torch.ops.fastdw.depthwise_conv2d_backward_input(g, w, list(x.shape), *args)
    assert torch.equal(gi, torch.ops.fastdw.depthwise_conv2d_backward_input(
        g, w, list(x.shape), *args))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cfg", pick("odd_3x3", "multiplier3_stride2") + [
    PATH_CONFIGS[3], PATH_CONFIGS[15], LARGE_CONFIGS[3]], ids=str)
def test_raw_ops_write_every_element(cfg, layout, dtype):
    x, w, b = _to_cuda(*cfg.make(dtype=dtype, channels_last=(layout == "channels_last")))
    args = [list(cfg.stride), list(cfg.padding), list(cfg.dilation)]
    out_shape = _out_shape(cfg)
    big = max(x.numel(), w.numel() * 64, 4096) * 4

    def poison():
        poison_allocator((big,), out_shape, x.shape, w.shape, (w.shape[0],), dtype=dtype,
                         device=CUDA)
    poison()
    out = torch.ops.fastdw.depthwise_conv2d(x, w, b, *args)
    g = as_layout(torch.randn(out.shape, dtype=dtype, device=CUDA), layout)
    poison()
    gi = torch.ops.fastdw.depthwise_conv2d_backward_input(g, w, list(x.shape), *args)
    poison()
    gw, gb = torch.ops.fastdw.depthwise_conv2d_backward_weight(g, x, list(w.shape), *args)
    for name, t in [("forward", out), ("grad_input", gi), ("grad_weight", gw), ("grad_bias", gb)]:
        assert torch.isfinite(t).all(), f"{cfg} {layout} {dtype}: {name} has non-finite values"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_empty_batch(layout):
    x = as_layout(torch.randn(0, 3, 8, 8, device=CUDA), layout).requires_grad_()
    w = torch.randn(6, 1, 3, 3, device=CUDA, requires_grad=True)
    b = torch.randn(6, device=CUDA, requires_grad=True)
    out = fastdw.depthwise_conv2d(x, w, b, padding=1)
    assert out.shape == (0, 6, 8, 8) and out.is_cuda
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cfg", pick("odd_3x3", "stride2", "multiplier2", "no_bias"), ids=str)
def test_opcheck(cfg, layout):
    x, w, b = _to_cuda(*cfg.make(dtype=torch.float32, channels_last=(layout == "channels_last"),
                                 requires_grad=True))
    args = tuple(map(list, (cfg.stride, cfg.padding, cfg.dilation)))
    torch.library.opcheck(torch.ops.fastdw.depthwise_conv2d, (x, w, b) + args)
    out = torch.ops.fastdw.depthwise_conv2d(x, w, b, *args).detach()
    g = torch.randn_like(out)
    torch.library.opcheck(torch.ops.fastdw.depthwise_conv2d_backward_input,
                          (g, w.detach(), list(x.shape)) + args)
    torch.library.opcheck(torch.ops.fastdw.depthwise_conv2d_backward_weight,
                          (g, x.detach(), list(w.shape)) + args)


def test_runs_on_current_stream_and_device():
    cfg = Conv(2, 16, 28, 28)
    x, w, b = _to_cuda(*cfg.make(dtype=torch.float32))
    ref = fastdw.depthwise_conv2d(x, w, b, padding=1)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        out = fastdw.depthwise_conv2d(x, w, b, padding=1)
    torch.cuda.current_stream().wait_stream(s)
    assert torch.equal(out, ref)


def test_over_2_31_elements():
    # One tensor past 2^31 elements: image offsets must be 64-bit. Checks the last images.
    free, _ = torch.cuda.mem_get_info()
    n, c, h, w = 70, 16, 1024, 1920  # 2.2e9 elements, 4.4 GB in bf16
    if free < 3 * n * c * h * w * 2:
        pytest.skip("not enough GPU memory")
    x = torch.randn(n, c, h, w, dtype=torch.bfloat16, device=CUDA)
    wt = torch.randn(c, 1, 3, 3, dtype=torch.bfloat16, device=CUDA)
    for layout in LAYOUTS:
        xl = as_layout(x, layout)
        out = fastdw.depthwise_conv2d(xl, wt, stride=2, padding=1)
        tail = reference.depthwise_conv2d(xl[-2:].double(), wt.double(), stride=2, padding=1)
        assert_close_to_reference(out[-2:], tail, torch.bfloat16, f"2^31 {layout}")
        del out
    del x


@given(cfg=depthwise_convs(), layout=st.sampled_from(LAYOUTS),
       dtype=st.sampled_from([torch.float64, torch.float32, torch.float16]))
def test_random_configs(cfg, layout, dtype):
    check_against_reference(cfg, dtype, layout, CUDA)

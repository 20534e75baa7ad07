"""NaN and Inf in weights and inputs (issue 14, item 5) on the CUDA kernels: padding is absent,
not zero. F.conv2d (float32, PyTorch's own CPU convolution) sums w * x over the taps that land
inside the input only, so an Inf weight whose tap lands on padding contributes nothing there;
a kernel that multiplies it by a zero halo gets NaN. The same holds for taps a kernel pads with
zero weights (the large-kernel path) over a non-finite input, for backward-input, where
grad_output positions outside the output do not exist, and for the weight gradient, which sums
over the outputs that exist only (not those a kernel computes past a row's end)."""
import pytest
import torch
import torch.nn.functional as F

from tests.support.configs import Conv
from tests.support.reference_check import assert_close_to_reference
from tests.cuda_harness.harness import (DTYPES, LAYOUTS, conv_args, make_inputs, ops,
                                        run_checked)
from tests.cuda_harness.test_kernel_paths import FALLBACK_CONFIGS, _variant_configs


def conv2d_padding_absent(x, w, b, stride, padding, dilation):
    """depthwise F.conv2d in which each output sums w * x over the taps inside the input only
    (F.unfold's zero padding is masked out, not multiplied): the padding-is-absent semantics
    of PyTorch's float32 CPU convolution, in any dtype, differentiable."""
    n, c, h, wd = x.shape
    co, _, kh, kw = w.shape
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    cols = F.unfold(x, (kh, kw), dilation, padding, stride).view(n, c, 1, kh * kw, oh * ow)
    inside = F.unfold(torch.ones(1, 1, h, wd, dtype=x.dtype), (kh, kw), dilation, padding,
                      stride).view(1, 1, 1, kh * kw, oh * ow) > 0
    taps = torch.where(inside, w.view(c, co // c, kh * kw, 1) * cols, 0)
    out = taps.sum(3).reshape(n, co, oh, ow)
    return out if b is None else out + b.view(1, co, 1, 1)


def test_oracle_is_pytorchs_float32_convolution():
    # The issue's example: F.conv2d in float32 gives [4, 6, 6, 4] on the first row and column
    # of channel 0 (the Inf tap lands on padding there) and Inf elsewhere.
    x = torch.ones(1, 2, 4, 4)
    w = torch.ones(2, 1, 3, 3)
    w[:, 0, 0, 0] = float("inf")
    expected = F.conv2d(x, w, padding=1, groups=2)
    assert expected[0, 0, 0].tolist() == [4, 6, 6, 4] and expected[0, 0, :, 0].tolist() == [4, 6, 6, 4]
    assert torch.isinf(expected[0, 0, 1:, 1:]).all()
    got = conv2d_padding_absent(x.double(), w.double(), None, (1, 1), (1, 1), (1, 1))
    torch.testing.assert_close(got.float(), expected, rtol=0, atol=0)
    # And on finite values it is F.conv2d.
    cfg = Conv(2, 3, 9, 11, kh=3, kw=5, m=2, stride=(2, 1), dilation=(1, 2), padding=(2, 3))
    x, w, b = make_inputs(cfg, torch.float64, "nchw")
    torch.testing.assert_close(conv2d_padding_absent(x, w, b, cfg.stride, cfg.padding,
                                                     cfg.dilation),
                               F.conv2d(x, w, b, cfg.stride, cfg.padding, cfg.dilation, groups=3))


def assert_same_nonfinite(actual, expected64, dtype, what):
    """NaN, +Inf and -Inf exactly where expected, the finite values within fastdw.accuracy's
    bound."""
    actual = actual.detach().double()
    for name, kind in [("NaN", torch.isnan), ("+Inf", torch.isposinf), ("-Inf", torch.isneginf)]:
        mismatch = kind(actual) != kind(expected64)
        if mismatch.any():
            idx = tuple(int(i) for i in torch.nonzero(mismatch)[0])
            raise AssertionError(f"{what}: {int(mismatch.sum())} elements differ in being {name}; "
                                 f"first at {idx}: got {actual[idx].item()}, expected "
                                 f"{expected64[idx].item()}")
    finite = torch.isfinite(expected64)
    assert_close_to_reference(actual[finite], expected64[finite], dtype, what)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("stride", [1, 2])
def test_issue_example(sim, layout, dtype, stride):
    x = torch.ones(1, 2, 4 * stride, 4 * stride, dtype=dtype)
    w = torch.ones(2, 1, 3, 3, dtype=dtype)
    w[:, 0, 0, 0] = float("inf")
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    args = [[stride] * 2, [1, 1], [1, 1]]
    out = run_checked(sim, "issue example", lambda: ops().depthwise_conv2d(x, w, None, *args))
    expected = F.conv2d(x.float(), w.float(), None, stride, 1, 1, groups=2)
    assert_same_nonfinite(out, expected.double(), dtype, f"{layout} {dtype} stride {stride}")
    assert out[0, 0, 0].tolist()[:2] == [4, 6] and out[0, 0, :2, 0].tolist() == [4, 6]


def _poison(x, w):
    """Inf and NaN inside two input planes and Inf on the last column of one (read by the
    outputs kernels compute past the row's end), +Inf and -Inf on corner taps of two channels'
    weights."""
    x, w = x.clone(), w.clone()
    h, wd = x.shape[2:]
    x[0, 0, h // 2, wd // 2] = float("inf")
    x[-1, -1, h // 3, (2 * wd) // 3] = float("nan")
    x[0, -1, (2 * h) // 3, -1] = float("inf")
    w[0, 0, 0, 0] = float("inf")
    w[-1, 0, -1, -1] = float("-inf")
    return x, w


NONFINITE_CONFIGS = _variant_configs() + [
    Conv(1, 3, 20, 22, kh=13, kw=13, padding=(6, 6)),
    Conv(1, 2, 12, 30, kh=5, kw=51, padding=(2, 25)),
    Conv(2, 8, 7, 7),
] + FALLBACK_CONFIGS


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cfg", NONFINITE_CONFIGS, ids=str)
def test_nonfinite_inputs_and_weights(sim, cfg, layout, dtype):
    what = f"{cfg} {layout} {dtype}"
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x, w, b = make_inputs(cfg, dtype, layout)
    x, w = _poison(x, w)
    x = x.contiguous(memory_format=memory_format)
    args = conv_args(cfg)
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    ref = conv2d_padding_absent(x64, w64, None if b is None else b.double(), cfg.stride,
                                cfg.padding, cfg.dilation)
    out = run_checked(sim, f"{what} forward", lambda: ops().depthwise_conv2d(x, w, b, *args))
    assert_same_nonfinite(out, ref.detach(), dtype, f"{what} forward")

    # Finite grad_output: each input gathers g * w over the outputs that read it, each weight
    # g * x over the outputs that exist (none past the output's edge).
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    g = g.to(dtype).contiguous(memory_format=memory_format)
    ref_gx, ref_gw = torch.autograd.grad(ref, (x64, w64), g.double())
    gx = run_checked(sim, f"{what} backward_input",
                     lambda: ops().depthwise_conv2d_backward_input(g, w, list(x.shape), *args))
    assert_same_nonfinite(gx, ref_gx, dtype, f"{what} backward_input")
    gw, _ = run_checked(sim, f"{what} backward_weight",
                        lambda: ops().depthwise_conv2d_backward_weight(g, x, list(w.shape),
                                                                        *args))
    assert_same_nonfinite(gw, ref_gw, dtype, f"{what} backward_weight")

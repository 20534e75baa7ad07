"""Memory formats: the output and every gradient have the strides PyTorch gives, for all 8
combinations of input / weight / grad_output layouts, including shapes where NCHW and
channels_last are ambiguous (size-1 dimensions); the fake kernels agree with the real ones."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fastdw
from tests.support import parity

CL = torch.channels_last

# (input shape, weight shape, conv kwargs)
SHAPES = [
    ((2, 4, 6, 6), (8, 1, 3, 3), dict(padding=1)),              # the issue's example, m = 2
    ((1, 2, 4, 4), (2, 1, 3, 3), dict(padding=1)),              # batch 1
    ((2, 3, 9, 7), (3, 1, 3, 3), dict(stride=2, padding=(0, 1))),
    ((2, 3, 1, 7), (3, 1, 1, 3), dict(padding=(0, 1))),         # 1xN
    ((2, 3, 7, 1), (6, 1, 3, 1), dict(padding=(1, 0))),         # Nx1
    ((1, 1, 5, 5), (1, 1, 3, 3), dict()),                        # one channel: ambiguous
    ((2, 3, 1, 1), (6, 1, 1, 1), dict()),                        # 1x1 planes: ambiguous
    ((2, 3, 5, 5), (3, 1, 5, 5), dict()),                        # 1x1 output
    ((3, 2, 6, 5), (2, 1, 2, 2), dict(dilation=2, padding=1)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("input_shape,weight_shape,kwargs", SHAPES,
                         ids=[f"x{s[0]}-w{s[1]}-{s[2]}" for s in SHAPES])
def test_layout_matrix(input_shape, weight_shape, kwargs, dtype):
    parity.layout_matrix(fastdw.depthwise_conv2d, input_shape, weight_shape, dtype, **kwargs)


def test_issue_examples():
    x = torch.randn(1, 2, 4, 4)
    w = torch.randn(2, 1, 3, 3).to(memory_format=CL)
    assert fastdw.depthwise_conv2d(x, w, padding=1).stride() == (32, 1, 8, 2)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    w = torch.randn(8, 1, 3, 3)
    y = fastdw.depthwise_conv2d(x, w, padding=1)
    (gx,) = torch.autograd.grad(y, x, torch.randn(y.shape).to(memory_format=CL))
    assert gx.stride() == (144, 36, 6, 1)


@pytest.mark.parametrize("input_shape,weight_shape,kwargs", SHAPES[:3],
                         ids=[f"x{s[0]}" for s in SHAPES[:3]])
def test_non_dense_inputs(input_shape, weight_shape, kwargs):
    """Sliced and permuted inputs: PyTorch's layout for what it suggests."""
    big = torch.randn(input_shape[0], input_shape[1], input_shape[2] * 2, input_shape[3] + 3)
    w = torch.randn(weight_shape)
    for x in (big[:, :, ::2, 1:-2], big.to(memory_format=CL)[:, :, ::2, 1:-2],
              big[:, :, ::2, 1:-2].transpose(2, 3).contiguous().transpose(2, 3)):
        got, ref = fastdw.depthwise_conv2d(x, w, **kwargs), parity.reference(x, w, **kwargs)
        parity.assert_same_layout(got, ref, f"strides {x.stride()}")
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x_cl,w_cl", [(False, True), (True, False), (True, True)])
def test_fake_kernels_agree_with_real_ones(x_cl, w_cl):
    """The layouts the public API gets under torch.compile's fake tensors equal eager ones."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    x = torch.randn(2, 4, 6, 6)
    w = torch.randn(8, 1, 3, 3)
    x = x.to(memory_format=CL) if x_cl else x
    w = w.to(memory_format=CL) if w_cl else w
    real = fastdw.depthwise_conv2d(x, w, padding=1)
    with FakeTensorMode() as mode:
        fake = fastdw.depthwise_conv2d(mode.from_tensor(x), mode.from_tensor(w), padding=1)
    assert fake.stride() == real.stride()


def test_channels_last_model_with_nchw_input():
    """A model moved to channels_last (weights channels_last) fed NCHW input: nn.Conv2d's
    output and input-gradient layouts, for the converted model too."""
    torch.manual_seed(0)
    stock = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=4), nn.ReLU(),
                          nn.Conv2d(8, 8, 1)).to(memory_format=CL)
    converted, _ = fastdw.convert(stock)
    x = torch.randn(2, 4, 7, 7)
    results = []
    for model in (stock, converted):
        leaf = x.clone().requires_grad_()
        out = model(leaf)
        results.append((out, torch.autograd.grad(out.square().sum(), leaf)[0]))
    for name, got, exp in zip(("output", "grad_input"), results[1], results[0]):
        parity.assert_same_layout(got, exp, name)
        torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layouts", [(False, False, True), (False, True, False),
                                     (True, False, False), (False, False, False)],
                         ids=["pw_cl", "dw_cl", "x_cl", "nchw"])
def test_separable_layouts(layouts):
    """The composed separable op's output layout: channels_last when the input or either weight
    is (what the two F.conv2d calls give)."""
    x_cl, dw_cl, pw_cl = layouts
    x = torch.randn(2, 4, 6, 6)
    dw, pw = torch.randn(4, 1, 3, 3), torch.randn(6, 4, 1, 1)
    x, dw, pw = (t.to(memory_format=CL) if cl else t for t, cl in zip((x, dw, pw), layouts))
    got = fastdw.depthwise_separable_conv2d(x, dw, None, pw, None, padding=1, activation="relu")
    ref = F.conv2d(F.relu(parity.reference(x, dw, None, padding=1)), pw)
    parity.assert_same_layout(got, ref, str(layouts))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_kernel_memory_format_is_suggest_memory_format():
    """fastdw's plain-int copy of ATen's rule agrees with torch._prims_common's on dense,
    permuted, sliced, expanded and size-1 shapes."""
    from torch._prims_common import suggest_memory_format
    from fastdw._layouts import kernel_memory_format
    for shape in [(8, 32, 28, 28), (1, 1, 5, 5), (2, 3, 1, 1), (1, 4, 3, 4), (2, 3, 1, 7),
                  (2, 3, 7, 1), (32, 1, 3, 3), (3, 2, 4, 5), (1, 1, 1, 1), (0, 3, 4, 4)]:
        base = [torch.empty(shape), torch.empty(shape).to(memory_format=CL),
                torch.empty(shape).permute(0, 1, 3, 2), torch.empty(shape).permute(1, 0, 2, 3),
                torch.empty(shape).to(memory_format=CL).permute(0, 1, 3, 2)]
        for t in base + [b[:, :, ::2] for b in base] + [b[:, :1] for b in base] + [
                b.expand(*b.shape) for b in base]:
            assert kernel_memory_format(t) == suggest_memory_format(t), (t.shape, t.stride())
    t = torch.empty_strided((1, 4, 2, 2), (4, 1, 8, 4))  # CL-contiguous, NCHW by the rule
    assert kernel_memory_format(t) == suggest_memory_format(t) == torch.contiguous_format

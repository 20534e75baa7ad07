"""fastdw.nn: DepthwiseConv2d against nn.Conv2d(groups=C), DepthwiseSeparableConv2d against the
reference, module-level autocast, state_dict, pickling."""
from __future__ import annotations

import copy
import io
import pickle
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from fastdw import reference
from fastdw.nn import DepthwiseConv2d, DepthwiseSeparableConv2d

# (in, out, kernel, stride, padding, dilation, bias, padding_mode)
CONV_CASES = [
    (3, 3, 3, 1, 1, 1, True, "zeros"),
    (4, 8, 3, 2, 1, 1, False, "zeros"),               # depth multiplier 2, stride 2
    (2, 6, (3, 5), (1, 2), (1, 2), 1, True, "zeros"),  # rectangular, per-axis
    (3, 3, 3, 1, 2, 2, True, "zeros"),                 # dilation
    (3, 3, 3, 1, "same", 1, True, "zeros"),
    (2, 2, 4, 1, "same", 1, True, "zeros"),            # even kernel: asymmetric 'same'
    (3, 3, 3, 1, "valid", 1, True, "zeros"),
    (3, 3, 3, 1, 1, 1, True, "reflect"),
    (3, 6, 5, 2, 2, 1, True, "replicate"),
    (3, 3, 3, 1, (1, 2), 1, False, "circular"),
    (2, 2, 4, 1, "same", 1, True, "reflect"),          # 'same' with a non-zero mode
    (1, 4, 3, 1, 1, 1, True, "zeros"),                 # one channel, multiplier 4
]


def _ids(case):
    return "-".join(str(v).replace(" ", "") for v in case)


def _pair(case, dtype=torch.float64, seed=0):
    cin, cout, k, s, p, d, b, mode = case
    torch.manual_seed(seed)
    ours = DepthwiseConv2d(cin, cout, k, s, p, d, bias=b, padding_mode=mode, dtype=dtype)
    torch.manual_seed(seed)
    stock = nn.Conv2d(cin, cout, k, s, p, d, groups=cin, bias=b, padding_mode=mode, dtype=dtype)
    return ours, stock


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("case", CONV_CASES, ids=_ids)
def test_depthwise_matches_conv2d(case):
    ours, stock = _pair(case)
    # same constructor -> same default initialisation from the same seed
    assert torch.equal(ours.weight, stock.weight)
    x = torch.randn(2, case[0], 9, 11, dtype=torch.float64, requires_grad=True)
    y, y_ref = ours(x), stock(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(y_ref)
    grads = torch.autograd.grad(y, [x] + list(ours.parameters()), g)
    grads_ref = torch.autograd.grad(y_ref, [x] + list(stock.parameters()), g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # unbatched (C, H, W) input, as nn.Conv2d
    torch.testing.assert_close(ours(x[0]), stock(x[0]), rtol=1e-10, atol=1e-10)


def test_attributes_and_state_dict_both_ways():
    ours, stock = _pair((4, 8, 3, 2, 1, 1, True, "reflect"))
    assert isinstance(ours, nn.Conv2d)
    for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                 "groups", "padding_mode", "output_padding", "transposed"):
        assert getattr(ours, attr) == getattr(stock, attr), attr
    assert ours.groups == 4
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in stock.state_dict().items()}
    fresh_stock = nn.Conv2d(4, 8, 3, 2, 1, groups=4, padding_mode="reflect",
                            dtype=torch.float64)
    fresh_stock.load_state_dict(ours.state_dict())
    fresh_ours = DepthwiseConv2d(4, 8, 3, 2, 1, padding_mode="reflect", dtype=torch.float64)
    fresh_ours.load_state_dict(stock.state_dict())
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(fresh_ours(x), fresh_stock(x))
    assert "DepthwiseConv2d(4, 8, kernel_size=(3, 3)" in repr(ours)


def test_constructor_errors():
    with pytest.raises(ValueError, match="out_channels must be a positive multiple"):
        DepthwiseConv2d(4, 6, 3)
    with pytest.raises(ValueError, match="groups == in_channels"):
        DepthwiseConv2d(4, 8, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode"):
        DepthwiseConv2d(4, 4, 3, padding_mode="mirror")
    DepthwiseConv2d(4, 8, 3, groups=4)  # the nn.Conv2d spelling is accepted
    m = DepthwiseConv2d(4, 8, 3)
    with pytest.raises(ValueError, match="expects 4 input channels"):
        m(torch.randn(1, 2, 8, 8))  # 8 % 2 == 0: the op alone would accept it
    with pytest.raises(ValueError, match="3-D .* or 4-D"):
        m(torch.randn(4, 8))


def test_from_conv_shares_parameters_and_mode():
    conv = nn.Conv2d(3, 6, 3, padding=1, groups=3, padding_mode="circular").eval()
    conv.bias.requires_grad_(False)
    ours = DepthwiseConv2d.from_conv(conv)
    assert ours.weight is conv.weight and ours.bias is conv.bias
    assert not ours.training and not ours.bias.requires_grad
    assert ours.padding_mode == "circular"
    x = torch.randn(2, 3, 7, 7)
    torch.testing.assert_close(ours(x), conv(x), rtol=1e-5, atol=1e-5)
    back = ours.to_conv()
    assert type(back) is nn.Conv2d and back.weight is conv.weight
    with pytest.raises(ValueError, match="dense"):
        DepthwiseConv2d.from_conv(nn.Conv2d(3, 6, 3))
    with pytest.raises(ValueError, match="grouped but not depthwise"):
        DepthwiseConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2))


def test_channels_last_output_format():
    ours, stock = _pair((4, 8, 3, 1, 1, 1, True, "zeros"), dtype=torch.float32)
    x = torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    y, y_ref = ours(x), stock(x)
    assert y.is_contiguous(memory_format=torch.channels_last) == \
        y_ref.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cpu_autocast_casts_like_conv2d(dtype):
    ours, stock = _pair((4, 8, 3, 1, 1, 1, True, "reflect"), dtype=torch.float32)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=dtype):
        y, y_ref = ours(x), stock(x)
    assert y_ref.dtype == dtype and y.dtype == dtype
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=2e-2, atol=2e-2)
    y.float().sum().backward()
    assert ours.weight.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
    with torch.autocast("cpu", dtype=dtype), torch.autocast("cpu", enabled=False):
        assert ours(x).dtype == torch.float32
    with torch.autocast("cpu", dtype=dtype):  # float64 is left alone, as by autocast
        assert ours.double()(x.double()).dtype == torch.float64


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_casts_like_conv2d(dtype):
    ours, stock = _pair((8, 8, 3, 1, 1, 1, True, "zeros"), dtype=torch.float32)
    ours, stock = ours.cuda(), stock.cuda()
    x = torch.randn(2, 8, 16, 16, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        y, y_ref = ours(x), stock(x)
    assert y.dtype == y_ref.dtype == dtype
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=2e-2, atol=2e-2)
    sep = DepthwiseSeparableConv2d(8, 16, 3, padding=1, activation="relu").cuda()
    with torch.autocast("cuda", dtype=dtype):
        y, y_ref = sep(x), sep.pointwise(torch.relu(sep.depthwise(x)))
    assert y.dtype == y_ref.dtype == dtype
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=3e-2, atol=3e-2)


def test_deepcopy_and_pickle():
    ours, _ = _pair((3, 6, 3, 1, 1, 1, True, "replicate"), dtype=torch.float32)
    x = torch.randn(1, 3, 6, 6)
    for clone in (copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):
        assert type(clone) is DepthwiseConv2d and clone.weight is not ours.weight
        torch.testing.assert_close(clone(x), ours(x))
    buf = io.BytesIO()
    torch.save(ours, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    torch.testing.assert_close(loaded(x), ours(x))


# ---- DepthwiseSeparableConv2d -------------------------------------------------------------

# (in, out, kernel, stride, padding, dilation, bias, activation, depth_multiplier)
SEP_CASES = [
    (4, 8, 3, 1, 1, 1, True, None, 1),
    (4, 6, 3, 2, 1, 1, False, "relu", 1),
    (3, 5, 5, 1, "same", 1, (True, False), "relu6", 1),
    (2, 4, 4, 1, "same", 1, (False, True), "gelu", 1),   # even kernel 'same'
    (3, 4, 3, 1, 2, 2, True, "relu", 2),                  # dilation, multiplier 2
    (3, 4, 3, 1, "valid", 1, True, None, 1),
]


@pytest.mark.parametrize("case", SEP_CASES, ids=_ids)
def test_separable_matches_reference(case):
    cin, cout, k, s, p, d, b, act, mult = case
    torch.manual_seed(0)
    m = DepthwiseSeparableConv2d(cin, cout, k, s, p, d, bias=b, activation=act,
                                 depth_multiplier=mult, dtype=torch.float64)
    assert m.in_channels == cin and m.out_channels == cout
    dw, pw = m.depthwise, m.pointwise
    x = torch.randn(2, cin, 9, 8, dtype=torch.float64, requires_grad=True)
    y = m(x)
    if p == "same":  # the reference takes what F.conv2d takes
        mid = nn.functional.conv2d(x, dw.weight, dw.bias, s, p, d, groups=cin)
        ref = nn.functional.conv2d(reference.ACTIVATIONS[act](mid), pw.weight, pw.bias)
    else:
        ref = reference.depthwise_separable_conv2d(x, dw.weight, dw.bias, pw.weight, pw.bias,
                                                   s, p, d, act)
    torch.testing.assert_close(y, ref, rtol=1e-9, atol=1e-9)
    g = torch.randn_like(ref)
    params = [x] + list(m.parameters())
    for a, r in zip(torch.autograd.grad(y, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(m(x[1]), ref[1], rtol=1e-9, atol=1e-9)  # unbatched


def test_separable_state_dict_matches_stock_pair():
    m = DepthwiseSeparableConv2d(4, 8, 3, padding=1, bias=(False, True), activation="relu")
    stock = nn.Sequential(OrderedDict(
        depthwise=nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False),
        pointwise=nn.Conv2d(4, 8, 1)))
    assert m.state_dict().keys() == stock.state_dict().keys()
    stock.load_state_dict(m.state_dict())
    x = torch.randn(1, 4, 6, 6)
    torch.testing.assert_close(m(x), stock[1](torch.relu(stock[0](x))), rtol=1e-5, atol=1e-5)
    assert "activation='relu'" in repr(m)


def test_separable_from_modules_and_errors():
    dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    pw = nn.Conv2d(4, 6, 1)
    m = DepthwiseSeparableConv2d.from_modules(dw, pw, "relu6")
    assert m.depthwise.weight is dw.weight and m.pointwise is pw
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(m(x), pw(nn.functional.relu6(dw(x))), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="not pointwise"):
        DepthwiseSeparableConv2d.from_modules(dw, nn.Conv2d(4, 6, 3))
    with pytest.raises(ValueError, match="padding_mode"):
        DepthwiseSeparableConv2d.from_modules(
            nn.Conv2d(4, 4, 3, padding=1, groups=4, padding_mode="reflect"), pw)
    with pytest.raises(ValueError, match="activation must be None or one of"):
        DepthwiseSeparableConv2d(4, 6, 3, activation="tanh")
    with pytest.raises(ValueError, match="expects 4 input channels"):
        m(torch.randn(1, 2, 5, 5))


def test_separable_cpu_autocast():
    m = DepthwiseSeparableConv2d(4, 8, 3, padding=1, activation="relu")
    x = torch.randn(2, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
        y_ref = m.pointwise(torch.relu(m.depthwise(x)))  # stock conv2d + our depthwise
    assert y.dtype == y_ref.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=3e-2, atol=3e-2)


"""fastdw.convert: what is replaced, what is skipped and why, what carries over, and fusion."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from fastdw.convert import ConversionReport, convert
from fastdw.nn import DepthwiseConv2d, DepthwiseSeparableConv2d


class MyConv(nn.Conv2d):
    pass


class Mixed(nn.Module):
    """One of each kind of convolution convert must tell apart."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(4, 4, 3, padding=1, groups=4),                          # 0 replaced
            nn.Conv2d(4, 8, 3, padding=1, groups=4, padding_mode="reflect"),  # 1 replaced (m=2)
            nn.Conv2d(8, 8, 1),                                              # 2 dense
            nn.Conv2d(8, 8, 3, padding=1, groups=2),                         # 3 grouped
            nn.ConvTranspose2d(8, 8, 3, padding=1, groups=8),                # 4 transposed
            MyConv(8, 8, 3, padding=1, groups=8),                            # 5 subclass
        )
        self.hooked = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.hooked.register_forward_hook(lambda m, i, o: o * 2)
        self.normed = nn.utils.parametrizations.weight_norm(
            nn.Conv2d(8, 8, 3, padding=1, groups=8))
        self.conv1d = nn.Conv1d(8, 8, 3, padding=1, groups=8)
        self.frozen = nn.Conv2d(8, 16, 3, padding=1, groups=8, bias=False)
        self.frozen.weight.requires_grad_(False)

    def forward(self, x):
        x = self.normed(self.hooked(self.body(x)))
        n, c, h, w = x.shape
        x = self.conv1d(x.flatten(2)).view(n, c, h, w)
        return self.frozen(x)


def test_replaced_and_skipped_with_reasons():
    torch.manual_seed(0)
    model = Mixed().eval()
    model.body[0].train()  # mixed train/eval modes are kept per module
    x = torch.randn(2, 4, 7, 7)
    expected = model(x)
    converted, report = convert(model)
    assert isinstance(report, ConversionReport)
    assert [e.name for e in report.replaced] == ["body.0", "body.1", "frozen"]
    reasons = {e.name: e.detail for e in report.skipped}
    assert "dense" in reasons["body.2"]
    assert "grouped but not depthwise" in reasons["body.3"]
    assert "transposed" in reasons["body.4"]
    assert "subclass" in reasons["body.5"]
    assert "hooks" in reasons["hooked"]
    assert "parametrized" in reasons["normed"]
    assert "Conv1d" in reasons["conv1d"]
    assert type(converted.body[0]) is DepthwiseConv2d and converted.body[0].training
    assert type(converted.body[1]) is DepthwiseConv2d and not converted.body[1].training
    assert converted.body[1].padding_mode == "reflect"
    assert not converted.frozen.weight.requires_grad
    # inplace=False leaves the original alone
    assert type(model.body[0]) is nn.Conv2d
    assert converted.body[0].weight is not model.body[0].weight
    torch.testing.assert_close(converted(x), expected, rtol=1e-5, atol=1e-5)
    text = str(report)
    assert report.summary() in text and "body.3" in text and "grouped" in text


def test_inplace_keeps_optimizer_working():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, groups=3), nn.ReLU(), nn.Conv2d(3, 2, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model[0].weight.detach().clone()
    same, report = convert(model, inplace=True)
    assert same is model and type(model[0]) is DepthwiseConv2d
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    opt.step()  # the optimizer built before conversion still holds the live parameters
    assert not torch.equal(model[0].weight, before)


def test_root_module_dtype_and_idempotence():
    conv = nn.Conv2d(2, 4, 3, groups=2, dtype=torch.float64)
    new, report = convert(conv)
    assert type(new) is DepthwiseConv2d and new.weight.dtype == torch.float64
    assert [e.name for e in report.replaced] == [""]
    again, report2 = convert(new)
    assert again.weight.dtype == torch.float64 and not report2.replaced
    assert "already a fastdw module" in report2.skipped[0].detail
    lazy = nn.LazyConv2d(4, 3)
    assert "lazy" in convert(nn.Sequential(lazy))[1].skipped[0].detail


# ---- fusion ---------------------------------------------------------------------------------

def _bn(c):
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():  # non-trivial statistics, so folding is really tested
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


def _block(cin, cout, act):
    """torchvision layout: Conv2dNormActivation-style Sequential, then the project conv + BN in
    the parent Sequential (the chain crosses a nesting boundary)."""
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False), _bn(cin), act),
        nn.Conv2d(cin, cout, 1, bias=False),
        _bn(cout),
    )


def test_fuse_requires_eval():
    model = _block(4, 8, nn.ReLU6())
    with pytest.raises(ValueError, match="eval mode"):
        convert(model, fuse=True)
    model.eval()
    model[2].train()
    with pytest.raises(ValueError, match="2"):
        convert(model, fuse=True)


@pytest.mark.parametrize("act,name", [(nn.ReLU6(inplace=True), "relu6"), (nn.ReLU(), "relu"),
                                      (nn.GELU(), "gelu"), (nn.Identity(), None)])
def test_fuse_chain(act, name):
    torch.manual_seed(0)
    model = nn.Sequential(_block(4, 8, act), nn.Conv2d(8, 8, 3, padding=1, bias=False),
                          _bn(8)).double().eval()
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    expected = model(x)
    fused, report = convert(model, fuse=True)
    assert len(report.folded) == 3 and len(report.fused) == 1
    sep = fused[0][0][0]
    assert type(sep) is DepthwiseSeparableConv2d and sep.activation == name
    assert sep.pointwise.bias is not None and sep.depthwise.bias is not None
    assert isinstance(fused[0][1], nn.Identity) and isinstance(fused[0][2], nn.Identity)
    assert fused[1].bias is not None  # the dense conv got its BN folded too
    torch.testing.assert_close(fused(x), expected, rtol=1e-10, atol=1e-10)
    # the original is untouched
    assert isinstance(model[0][2], nn.BatchNorm2d)
    torch.testing.assert_close(model(x), expected)


def test_fuse_skips_with_reasons():
    torch.manual_seed(0)
    no_stats = nn.BatchNorm2d(4, track_running_stats=False)
    model = nn.Sequential(
        nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.GELU(approximate="tanh"), nn.Conv2d(4, 4, 1),
        nn.Conv2d(4, 4, 3, padding=1, groups=4), no_stats, nn.ReLU(), nn.Conv2d(4, 4, 1),
        nn.ReLU(), _bn(4),
        nn.Conv2d(4, 4, 3, padding=1, groups=4),  # last: nothing follows
    ).eval()
    x = torch.randn(1, 4, 6, 6)
    expected = model(x)
    fused, report = convert(model, fuse=True)
    assert not report.fused and not report.folded
    reasons = {e.name: e.detail for e in report.skipped}
    assert "not fused" in reasons["0"] and "GELU" in reasons["0"]
    assert "running statistics" in reasons["4"]
    assert "not fused" in reasons["3"]
    assert "follows ReLU" in reasons["8"]
    assert "no pointwise conv follows" in reasons["9"]
    torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-5)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.bn = _bn(4)

    def forward(self, x):
        return x + self.bn(self.conv(x))


def test_fuse_leaves_custom_forward_alone():
    model = nn.Sequential(Residual(), nn.Conv2d(4, 4, 1)).eval()
    x = torch.randn(1, 4, 5, 5)
    expected = model(x)
    fused, report = convert(model, fuse=True)
    assert not report.fused and not report.folded
    assert any(e.name == "0.bn" and "not after a conv inside an nn.Sequential" in e.detail
               for e in report.skipped)
    # the depthwise conv inside the block sits in no Sequential: replaced, not fused
    assert type(fused[0].conv) is DepthwiseConv2d
    torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-5)


def test_fuse_folds_into_separable_module_and_stock_pairs():
    torch.manual_seed(0)
    stock_pair = nn.Sequential(OrderedDict(
        depthwise=nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False),
        pointwise=nn.Conv2d(4, 6, 1, bias=False)))
    model = nn.Sequential(
        nn.ReLU(), stock_pair, _bn(6),
        DepthwiseSeparableConv2d(6, 6, 3, padding=1, bias=False), _bn(6),
    ).double().eval()
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    expected = model(x)
    fused, report = convert(model, fuse=True)
    assert [e.name for e in report.fused] == ["1.depthwise"]
    assert [e.detail for e in report.folded] == ["-> 1.pointwise", "-> 3"]
    torch.testing.assert_close(fused(x), expected, rtol=1e-10, atol=1e-10)



def test_reused_modules():
    torch.manual_seed(0)
    act = nn.ReLU()
    shared_dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    model = nn.Sequential(
        nn.Conv2d(4, 4, 3, padding=1, groups=4), act, nn.Conv2d(4, 4, 1),
        nn.Conv2d(4, 4, 3, padding=1, groups=4), act, nn.Conv2d(4, 4, 1),  # act runs twice
        shared_dw, _bn(4), nn.Conv2d(4, 4, 1),
        shared_dw, _bn(4), nn.Conv2d(4, 4, 1),  # one conv instance, two different BNs
    ).double().eval()
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    expected = model(x)
    fused, report = convert(model, fuse=True)
    # one replacement for the shared conv, used in both places
    assert fused[6] is fused[9] and type(fused[6]) is DepthwiseConv2d
    assert [e.name for e in report.fused] == ["0", "3"]
    assert [e.activation for e in (fused[0], fused[3])] == ["relu", "relu"]
    reasons = {e.name: e.detail for e in report.skipped}
    assert "more than one place" in reasons["7"] and "more than one place" in reasons["10"]
    torch.testing.assert_close(fused(x), expected, rtol=1e-10, atol=1e-10)

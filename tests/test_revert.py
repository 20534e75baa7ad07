"""``fastdw.revert``: stock modules only, sharing the weights; ``convert`` then ``revert`` gives
the stock model back: the same module type at every name, the same state_dict (keys and bitwise
values) and bitwise the same outputs (the same PyTorch kernels run again), in eval and in train
mode. What ``convert(fuse=True)`` folded stays folded, and the report says so."""
from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

import fastdw
from fastdw import revert
from fastdw.models import xception
from fastdw.nn import DepthwiseConv2d, DepthwiseSeparableConv2d
from tests.support.reference_check import assert_close_to_reference
from tests.support.export_cases import MODELS, converted_model, stock_model

FASTDW_TYPES = (DepthwiseConv2d, DepthwiseSeparableConv2d)


def _types(model):
    return {name: type(m) for name, m in model.named_modules()}


def _assert_same_state(actual: nn.Module, expected: nn.Module, what: str):
    a, e = actual.state_dict(), expected.state_dict()
    assert list(a) == list(e), f"{what}: keys differ: {set(a) ^ set(e)}"
    for key in e:
        assert a[key].dtype == e[key].dtype and torch.equal(a[key], e[key]), f"{what}: {key}"


def _assert_same_outputs(actual: nn.Module, expected: nn.Module, x, what: str):
    for mode in ("eval", "train"):  # train: batch statistics, running stats updated alike
        outs = []
        for m in (actual, expected):
            torch.manual_seed(0)  # the same dropout masks
            outs.append(getattr(m, mode)()(x))
        assert torch.equal(*outs), \
            f"{what} ({mode}): max abs diff {(outs[0] - outs[1]).abs().max().item():.3g}"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_convert_then_revert_is_the_stock_model(name):
    stock, converted, x = converted_model(name)
    stock = copy.deepcopy(stock)  # the cached model stays untouched by the train-mode pass
    reverted, report = revert(converted)
    assert _types(reverted) == _types(stock)
    assert len(report.reverted) == sum(isinstance(m, DepthwiseConv2d)
                                       for m in converted.modules())
    assert not report.unfused and not report.skipped
    _assert_same_state(reverted, stock, name)
    with torch.no_grad():
        _assert_same_outputs(reverted, stock, x, name)


@pytest.mark.slow
def test_fastdw_xception_reverts_to_the_stock_xception():
    stock, x = stock_model("xception")
    stock = copy.deepcopy(stock).eval()
    torch.manual_seed(0)
    model = xception(num_classes=10).eval()  # built with DepthwiseSeparableConv2d
    model.load_state_dict(stock.state_dict())  # strict: the same keys and shapes
    reverted, report = revert(model)
    assert _types(reverted) == _types(stock)
    assert len(report.unfused) == sum(isinstance(m, DepthwiseSeparableConv2d)
                                      for m in model.modules())
    _assert_same_state(reverted, stock, "xception")
    with torch.no_grad():
        _assert_same_outputs(reverted, stock, x, "xception")


@pytest.mark.parametrize("name", ["mobilenet_v2", "multiplier2_dilation_same"])
def test_revert_of_fused_model_computes_the_same_with_stock_modules(name):
    stock, fused, x = converted_model(name, fuse=True)
    reverted, report = revert(fused)
    assert not any(isinstance(m, FASTDW_TYPES) for m in reverted.modules())
    assert report.unfused and all("stay folded" in e.detail for e in report.unfused)
    for entry in report.unfused:
        names = list(reverted.get_submodule(entry.name)._modules)
        assert names[0] == "depthwise" and names[-1] == "pointwise", names
    with torch.no_grad():  # BatchNorms folded: close, not bitwise
        assert_close_to_reference(reverted(x), stock(x), torch.float32, f"{name} fused+reverted")


def test_unfused_activation_and_multiplier():
    torch.manual_seed(0)
    for activation, cls in (("relu", nn.ReLU), ("relu6", nn.ReLU6), ("gelu", nn.GELU)):
        sep = DepthwiseSeparableConv2d(3, 5, (4, 3), padding="same", dilation=(1, 2),
                                       activation=activation, depth_multiplier=2).eval()
        reverted, _ = revert(sep, inplace=True)
        assert list(reverted._modules) == ["depthwise", "activation", "pointwise"]
        assert type(reverted.activation) is cls and not reverted.training
        dw = reverted.depthwise
        assert type(dw) is nn.Conv2d and (dw.groups, dw.out_channels) == (3, 6)
        assert dw.weight is sep.depthwise.weight and reverted.pointwise is sep.pointwise
        x = torch.randn(2, 3, 8, 9)
        with torch.no_grad():
            assert_close_to_reference(reverted(x), sep(x), torch.float32, activation)


def test_inplace_shares_parameters_and_copy_does_not_touch_the_model():
    model = nn.Sequential(DepthwiseConv2d(4, 8, 3, padding=1), nn.ReLU())
    copied, _ = revert(model)
    assert type(model[0]) is DepthwiseConv2d and copied[0].weight is not model[0].weight
    reverted, _ = revert(model, inplace=True)
    assert reverted is model and type(model[0]) is nn.Conv2d
    conv = model[0]
    assert conv.weight.requires_grad and conv.padding_mode == "zeros"


def test_shared_instance_gets_one_replacement():
    dw = DepthwiseConv2d(4, 4, 3, padding=1)
    reverted, report = revert(nn.Sequential(OrderedDict(a=dw, act=nn.ReLU(), b=dw)))
    assert reverted.a is reverted.b and type(reverted.a) is nn.Conv2d
    assert [e.name for e in report.reverted] == ["a"]


def test_padding_modes_survive():
    for mode in ("reflect", "replicate", "circular"):
        m = DepthwiseConv2d(3, 6, 3, padding=2, padding_mode=mode, dilation=2)
        reverted, _ = revert(m)
        assert reverted.padding_mode == mode
        x = torch.randn(1, 3, 9, 9)
        with torch.no_grad():
            assert_close_to_reference(reverted(x), m(x), torch.float32, mode)


class _Subclass(DepthwiseConv2d):
    pass


def test_what_is_left_is_reported():
    hooked = DepthwiseConv2d(4, 4, 3)
    hooked.register_forward_hook(lambda *a: None)
    model = nn.Sequential(_Subclass(4, 4, 3), hooked, DepthwiseConv2d(4, 4, 3))
    reverted, report = revert(model)
    assert [type(m) for m in reverted] == [_Subclass, DepthwiseConv2d, nn.Conv2d]
    reasons = {e.name: e.detail for e in report.skipped}
    assert "subclass" in reasons["0"] and "hooks" in reasons["1"]
    text = str(report)
    assert text.startswith("fastdw.revert: reverted 1, unfused 0, skipped 2") and "hooks" in text


def test_root_module_and_bad_argument():
    reverted, _ = revert(DepthwiseConv2d(2, 2, 3))
    assert type(reverted) is nn.Conv2d
    with pytest.raises(TypeError, match="revert expects an nn.Module"):
        revert("model")


def test_public_api():
    assert fastdw.revert is revert and fastdw.RevertReport is type(revert(nn.ReLU())[1])

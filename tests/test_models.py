"""fastdw.models: parameter counts of the reference architectures, shapes, stock/fastdw parity,
fusion of whole networks, and the end-to-end benchmark function."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from fastdw.convert import convert
from fastdw.models import format_rows, mobilenet_v2, run_e2e, xception
from fastdw.nn import DepthwiseConv2d, DepthwiseSeparableConv2d


def _count(model):
    return sum(p.numel() for p in model.parameters())


def _copy_weights(src, dst):
    dst.load_state_dict(src.state_dict())
    return dst


@pytest.mark.parametrize("use_fastdw", [True, False])
def test_mobilenet_v2_parameters(use_fastdw):
    model = mobilenet_v2(use_fastdw=use_fastdw)
    assert _count(model) == 3_504_872  # torchvision.models.mobilenet_v2()
    assert _count(mobilenet_v2(num_classes=10, use_fastdw=use_fastdw)) == \
        3_504_872 - 1281 * 1000 + 1281 * 10
    dw = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(dw) == 17
    assert all(type(m) is (DepthwiseConv2d if use_fastdw else nn.Conv2d) for m in dw)
    keys = model.state_dict().keys()  # torchvision's names, so its checkpoints load
    for k in ("features.0.0.weight", "features.1.conv.0.0.weight", "features.1.conv.1.weight",
              "features.2.conv.1.0.weight", "features.18.1.running_var", "classifier.1.bias"):
        assert k in keys


def test_mobilenet_v2_width_and_shapes():
    model = mobilenet_v2(num_classes=7, width_mult=0.5).eval()
    assert model.last_channel == 1280
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert model.features(torch.randn(1, 3, 224, 224)).shape == (1, 1280, 7, 7)
    assert mobilenet_v2(width_mult=1.4).last_channel == 1792


@pytest.mark.parametrize("use_fastdw", [True, False])
def test_xception_parameters(use_fastdw):
    model = xception(use_fastdw=use_fastdw)
    # Keras Xception(include_top=True): 22,855,952 trainable (BN gamma/beta included).
    assert _count(model) == 22_855_952
    buffers = sum(b.numel() for n, b in model.named_buffers() if "running" in n)
    assert buffers == 54_528  # Keras' non-trainable moving means and variances
    if use_fastdw:
        assert sum(isinstance(m, DepthwiseSeparableConv2d) for m in model.modules()) == 34
    else:
        assert not any(isinstance(m, (DepthwiseConv2d, DepthwiseSeparableConv2d))
                       for m in model.modules())


def test_xception_forward_small():
    torch.manual_seed(0)
    model = xception(num_classes=5).eval()
    stock = _copy_weights(model, xception(num_classes=5, use_fastdw=False).eval())
    x = torch.randn(2, 3, 32, 32)
    y = model(x)
    assert y.shape == (2, 5)
    torch.testing.assert_close(y, stock(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_xception_feature_sizes_at_299():
    model = xception().eval()
    with torch.no_grad():
        entry = model.entry_flow(torch.randn(1, 3, 299, 299))
        assert entry.shape == (1, 728, 19, 19)
        assert model.exit_flow(model.middle_flow(entry)).shape == (1, 2048, 10, 10)


def test_converted_stock_equals_native_fastdw_models():
    torch.manual_seed(0)
    native = mobilenet_v2(num_classes=10, width_mult=0.5).eval()
    stock = _copy_weights(native, mobilenet_v2(num_classes=10, width_mult=0.5,
                                               use_fastdw=False).eval())
    converted, report = convert(stock)
    assert len(report.replaced) == 17
    assert [type(a) for a in converted.modules()] == [type(b) for b in native.modules()]
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(converted(x), native(x), rtol=0, atol=0)
    torch.testing.assert_close(converted(x), stock(x), rtol=1e-4, atol=1e-4)


def _randomise_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


@pytest.mark.slow
def test_fuse_mobilenet_v2():
    torch.manual_seed(0)
    stock = _randomise_bn(mobilenet_v2(num_classes=10, width_mult=0.5, use_fastdw=False))
    stock = stock.double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    fused, report = convert(stock, fuse=True)
    assert (len(report.replaced), len(report.folded), len(report.fused)) == (17, 52, 17)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    torch.testing.assert_close(fused(x), stock(x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("use_fastdw", [True, False])
def test_fuse_xception(use_fastdw):
    torch.manual_seed(0)
    model = _randomise_bn(xception(num_classes=10, use_fastdw=use_fastdw)).eval()
    x = torch.randn(1, 3, 32, 32)
    expected = model(x)
    fused, report = convert(model, fuse=True)
    assert len(report.folded) == 40  # every BatchNorm
    assert len(report.fused) == (0 if use_fastdw else 34)
    assert sum(isinstance(m, DepthwiseSeparableConv2d) for m in fused.modules()) == 34
    torch.testing.assert_close(fused(x), expected, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_run_e2e_rows():
    rows = run_e2e("cpu", batch=2, resolution=32, width_mult=0.25, min_run_time=0.01)
    got = [(r["mode"], r["provider"]) for r in rows]
    assert got == [("inference", "torch"), ("inference", "fastdw"),
                   ("inference", "fastdw-fused"), ("train", "torch"), ("train", "fastdw")]
    for r in rows:
        assert r["median_ms"] > 0 and r["batch"] == 2
        if r["mode"] == "inference":
            assert r["max_rel_diff"] < 1e-3
    table = format_rows(rows)
    assert "fastdw-fused" in table and "median ms" in table

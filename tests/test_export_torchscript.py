"""TorchScript: ``torch.jit.script`` and ``torch.jit.trace`` of fastdw modules, converted models
and ``fastdw.models`` give the eager outputs bitwise (the same fastdw kernels run), survive
``torch.jit.save``/``load``, and hold ``fastdw::depthwise_conv2d`` (never a Python call)."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn as nn

import fastdw
from fastdw.export.torchscript import resolve_padding
from fastdw.models import xception
from fastdw.nn import DepthwiseConv2d, DepthwiseSeparableConv2d
from tests.support.export_cases import converted_model
from tests.support.export_checks import node_kinds


pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*is deprecated")


def _compile(model, x, how):
    # check_trace=False: _check compares with eager itself (the check would run the model twice)
    if how == "script":
        return torch.jit.script(model)
    return torch.jit.trace(model, x, check_trace=False)


def _saved_and_loaded(compiled):
    buf = io.BytesIO()
    torch.jit.save(compiled, buf)
    buf.seek(0)
    return torch.jit.load(buf)


def _check(model, x, how, what):
    """Scripted/traced, saved and loaded: bitwise the eager output; the graph calls the fastdw
    op and no Python."""
    with torch.no_grad():
        expected = model(x)
        compiled = _compile(model, x, how)
        for name, m in (("compiled", compiled), ("loaded", _saved_and_loaded(compiled))):
            out = m(x)
            assert out.shape == expected.shape and torch.equal(out, expected), \
                f"{what} {how} {name}: max abs diff {(out - expected).abs().max().item():.3g}"
            assert out.stride() == expected.stride(), \
                f"{what} {how} {name}: strides {out.stride()}, eager {expected.stride()}"
    kinds = node_kinds(compiled.inlined_graph)
    assert "fastdw::depthwise_conv2d" in kinds and "prim::PythonOp" not in kinds, \
        f"{what} {how}: {sorted(k for k in kinds if not k.startswith(('aten', 'prim::Const')))}"
    return compiled


SMALL_IMAGE = (1, 3, 32, 32)  # bitwise comparisons need no calibrated, well-conditioned model
# Xception is built with DepthwiseSeparableConv2d; MODULES below covers each activation.
MODELS = {
    "converted mobilenet_v2": lambda: converted_model("mobilenet_v2")[1],
    "fastdw.models.xception": lambda: xception(num_classes=10).eval(),
    "converted multiplier2_dilation_same": lambda: converted_model(
        "multiplier2_dilation_same")[1],
}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["script", "trace"])
@pytest.mark.parametrize("name", list(MODELS))
def test_models(name, how):
    torch.manual_seed(0)
    model = MODELS[name]()
    x = torch.randn((2, 4, 11, 13) if "multiplier" in name else SMALL_IMAGE)
    _check(model, x, how, name)


def _dw(**kw):
    return DepthwiseConv2d(3, kw.pop("out", 3), kw.pop("k", 3), **kw)


# fastdw.nn modules: every padding form and mode, multiplier, rectangular kernels, no bias.
MODULES = {
    "same asymmetric, multiplier 2": lambda: _dw(out=6, k=(4, 3), padding="same",
                                                 dilation=(1, 2)),
    "same symmetric 5x5": lambda: _dw(k=5, padding="same"),
    "valid stride 2": lambda: _dw(padding="valid", stride=2, bias=False),
    "int padding > k/2, stride (2, 1)": lambda: _dw(padding=3, stride=(2, 1)),
    "reflect": lambda: _dw(padding=2, padding_mode="reflect", dilation=2),
    "replicate": lambda: _dw(padding=(1, 2), padding_mode="replicate", k=(3, 5)),
    "circular": lambda: _dw(out=9, padding=1, padding_mode="circular"),
    "separable relu6": lambda: DepthwiseSeparableConv2d(3, 5, 3, padding=1, activation="relu6"),
    "separable gelu, multiplier 2, same": lambda: DepthwiseSeparableConv2d(
        3, 4, 4, padding="same", activation="gelu", depth_multiplier=2),
    "separable none, stride 2, no biases": lambda: DepthwiseSeparableConv2d(
        3, 4, 3, stride=2, padding=1, bias=False),
}


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "unbatched"])
@pytest.mark.parametrize("how", ["script", "trace"])
@pytest.mark.parametrize("name", list(MODULES))
def test_modules(name, how, layout):
    torch.manual_seed(0)
    module = MODULES[name]()
    x = torch.randn(2, 3, 9, 10)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "unbatched":
        x = x[0]
    _check(module, x, how, f"{name} {layout}")


@pytest.mark.parametrize("kernel, dilation", [((4, 3), (1, 2)), ((2, 2), (3, 1)), ((5, 1), (2, 2))])
def test_resolve_padding_is_torch_same_padding(kernel, dilation):
    """The TorchScript 'same' padding equals the eager rule (fastdw._args, F.conv2d)."""
    from fastdw.geometry import same_padding
    pad, extra = same_padding(kernel, dilation, (1, 1))
    assert resolve_padding("same", kernel, dilation) == [*pad, *extra]
    assert resolve_padding("valid", kernel, dilation) == [0, 0, 0, 0]


def test_scripted_module_trains_like_eager():
    """Autograd through the op in a scripted module: the gradients are eager's, bitwise."""
    torch.manual_seed(0)
    module = _dw(out=6, k=(4, 3), padding="same")
    x = torch.randn(2, 3, 7, 8, requires_grad=True)
    scripted = _compile(module, x, "script")
    grads = []
    for m in (module, scripted):
        x.grad = None
        module.zero_grad()
        m(x).square().sum().backward()
        grads.append([x.grad.clone(), module.weight.grad.clone(), module.bias.grad.clone()])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_wrong_channels_raise_naming_the_module():
    module = nn.Sequential(_dw())
    scripted = _compile(module, None, "script")
    with pytest.raises(Exception, match="DepthwiseConv2d expects 3 input channels, got 4"):
        scripted(torch.randn(1, 4, 5, 5))


def test_traced_wrong_channels_raise_in_the_op():
    # A trace keeps no Python checks (as for any traced model); the op's own check remains.
    traced = _compile(nn.Sequential(_dw()), torch.randn(1, 3, 5, 5), "trace")
    with pytest.raises(RuntimeError, match="weight must have shape"):
        traced(torch.randn(1, 4, 5, 5))


def test_converted_model_type_checks_still_see_conv2d():
    """Scripting must not have changed what eager code sees."""
    model = converted_model("multiplier2_dilation_same")[1]
    assert isinstance(model[0], nn.Conv2d) and type(model[0]) is DepthwiseConv2d
    assert fastdw.DepthwiseConv2d is DepthwiseConv2d

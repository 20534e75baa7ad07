"""The fused separable op (``fastdw::depthwise_separable_conv2d``, Triton) leaves Python as stock
ops: ONNX ``Conv`` + activation + ``Conv`` with both exporters, and ``aten.convolution`` +
activation + ``aten.convolution`` through ``fastdw.export.decompositions()``.

The op runs on a GPU, or on the CPU under the Triton interpreter (tests/support/triton_mode.py); if
fastdw.triton was already imported without the interpreter, the tests here skip and
test_fused_suite_in_subprocess reruns them in a fresh interpreter.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import fastdw
from fastdw import reference
from tests.support.export_checks import check_onnx_model, export_onnx, node_kinds, run_onnxruntime
from tests.support.reference_check import assert_close_to_reference
from tests.support.triton_mode import HAS_CUDA, import_fused, rerun_in_subprocess

fused = import_fused()
DEVICE = "cuda" if HAS_CUDA else "cpu"
FUSED_OP = "fastdw.depthwise_separable_conv2d.default"
ACTIVATIONS = [None, "relu", "relu6", "gelu"]


@pytest.fixture
def triton_path(monkeypatch):
    if not (HAS_CUDA or fused.INTERPRETED):
        pytest.skip("fastdw.triton was imported without TRITON_INTERPRET=1; "
                    "test_fused_suite_in_subprocess runs this")
    if not HAS_CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "1")


class Functional(nn.Module):
    """Calls ``fastdw.depthwise_separable_conv2d`` directly, so that ``torch.jit.trace`` (which
    the dynamo=False exporter uses) records the fused op; the modules trace their composed
    path instead (see fastdw.export.torchscript)."""

    def __init__(self, module):
        super().__init__()
        self.m = module

    def forward(self, x):
        dw, pw = self.m.depthwise, self.m.pointwise
        return fastdw.depthwise_separable_conv2d(x, dw.weight, dw.bias, pw.weight, pw.bias,
                                                 dw.stride, dw.padding, dw.dilation,
                                                 self.m.activation)


def _case(activation):
    """A fused separable module ('same' padding, asymmetric in height, dilated in width), an
    input, and its float64 reference output."""
    torch.manual_seed(len(str(activation)))
    module = fastdw.nn.DepthwiseSeparableConv2d(4, 6, (4, 3), padding="same", dilation=(1, 2),
                                                activation=activation).to(DEVICE).eval()
    x = torch.randn(1, 4, 6, 7, device=DEVICE)  # small: the interpreter runs a program at a time
    return module, x


def _reference(module, x):
    dw, pw = module.depthwise, module.pointwise
    with torch.no_grad():
        return reference.depthwise_separable_conv2d(
            x, dw.weight, dw.bias, pw.weight, pw.bias, 1, "same", dw.dilation,
            module.activation, upcast=True).cpu()


def _targets(program):
    return [str(n.target) for n in program.graph.nodes if n.op == "call_function"]


def _check_ort(data, module, x, what):
    check_onnx_model(data, [x.shape[1]])
    for batch in (2, 3):  # the export traced batch 1
        xb = torch.randn(batch, *x.shape[1:], device=DEVICE)
        assert_close_to_reference(run_onnxruntime(data, xb.cpu()), _reference(module, xb),
                                  torch.float32, f"{what} batch {batch}")


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
def test_dynamo_onnx(activation, triton_path):
    module, x = _case(activation)
    assert FUSED_OP in _targets(torch.export.export(module, (x,)))
    _check_ort(export_onnx(module, x, dynamo=True), module, x, f"dynamo {activation}")


# Opset 9 and 20 bound the range; relu6's Clip takes attributes before opset 11, inputs after.
TORCHSCRIPT_CASES = [(a, o) for a in ACTIVATIONS for o in (9, 20)] + [("relu6", 11)]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # fastdw.triton's shape checks
@pytest.mark.parametrize("activation, opset", TORCHSCRIPT_CASES,
                         ids=[f"{a}-opset{o}" for a, o in TORCHSCRIPT_CASES])
def test_torchscript_onnx(activation, opset, triton_path):
    module, x = _case(activation)
    functional = Functional(module)
    kinds = node_kinds(torch.jit.trace(functional, x, check_trace=False).inlined_graph)
    assert "fastdw::depthwise_separable_conv2d" in kinds, kinds
    _check_ort(export_onnx(functional, x, dynamo=False, opset=opset), module, x,
               f"torchscript opset {opset} {activation}")


@pytest.mark.parametrize("activation", ["relu6", "gelu"])
def test_decompositions_lower_fused_op(activation, triton_path):
    module, x = _case(activation)
    program = torch.export.export(module, (x,))
    lowered = program.run_decompositions(fastdw.export.decompositions())
    targets = _targets(lowered)
    assert not [t for t in targets if "fastdw" in t], targets
    assert targets.count("aten.convolution.default") == 2, targets
    with torch.no_grad():
        assert_close_to_reference(lowered.module()(x).cpu(), _reference(module, x),
                                  torch.float32, f"decomposed {activation}")


@pytest.mark.subprocess
@pytest.mark.skipif(HAS_CUDA or fused.INTERPRETED,
                    reason="the fused-op export tests ran in this process")
def test_fused_suite_in_subprocess():
    rerun_in_subprocess(__file__)

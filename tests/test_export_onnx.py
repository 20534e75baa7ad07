"""ONNX: converted models export with both torch.onnx exporters, unchanged export calls, as
standard ONNX (a depthwise conv is a ``Conv`` with ``group = C``), and onnxruntime reproduces
the stock model's outputs (fp32, 1e-5) at batch sizes other than the traced one.

The fused Triton op's translations are in test_export_fused.py; ``import fastdw`` staying
cheap is tested at the end, the registration hook in test_export_hooks.py."""
from __future__ import annotations

import pytest
import torch

from tests.support.child import run_python
from tests.support.export_cases import converted_model, depthwise_groups
from tests.support.export_checks import check_onnx_model, export_onnx, run_onnxruntime
from tests.support.reference_check import assert_close_to_reference

BATCHES = (1, 3)  # the export traces batch 2


def assert_runs_like_stock(data: bytes, stock, x, what: str):
    for batch in BATCHES:
        xb = torch.randn(batch, *x.shape[1:])
        with torch.no_grad():
            expected = stock(xb)
        assert_close_to_reference(run_onnxruntime(data, xb), expected, torch.float32,
                                  f"{what} batch {batch}")


# The tutorial's models with each exporter's default opset: MobileNetV2 converted, with both
# exporters; Xception converted and fused (BatchNorms folded, dw -> pw pairs
# DepthwiseSeparableConv2d) with the default exporter (dynamo=True; the other one takes 25 s
# longer on its 22.9M weights for nothing new). On the CPU a fused model exports the same ops
# as a converted one (fastdw's depthwise op, stock activation and 1x1 conv); the fused Triton
# op is test_export_fused.py's.
MODEL_CASES = [("mobilenet_v2", False, False), ("mobilenet_v2", False, True),
               ("xception", True, True)]


@pytest.mark.slow
@pytest.mark.parametrize("name, fuse, dynamo", MODEL_CASES,
                         ids=[f"{n}-fuse{f}-{'dynamo' if d else 'torchscript'}"
                              for n, f, d in MODEL_CASES])
def test_converted_model_exports_like_stock(name, fuse, dynamo):
    stock, converted, x = converted_model(name, fuse)
    data = export_onnx(converted, x, dynamo)
    check_onnx_model(data, depthwise_groups(stock))
    assert_runs_like_stock(data, stock, x, f"{name} fuse={fuse} dynamo={dynamo}")


# The opset range: dynamo=False from 9 (the symbolics' minimum) to 20 (that exporter's
# maximum); dynamo=True 18 (torchlib's) to 23 (torch.onnx's maximum).
OPSETS = [(False, 9), (False, 11), (False, 13), (False, 17), (False, 20), (True, 18), (True, 23)]


@pytest.mark.parametrize("fuse", [False, True])
@pytest.mark.parametrize("dynamo, opset", OPSETS,
                         ids=[f"{'dynamo' if d else 'torchscript'}-opset{o}" for d, o in OPSETS])
def test_multiplier_dilation_same_every_opset(dynamo, opset, fuse):
    stock, converted, x = converted_model("multiplier2_dilation_same", fuse)
    data = export_onnx(converted, x, dynamo, opset)
    check_onnx_model(data, depthwise_groups(stock), opset)
    assert_runs_like_stock(data, stock, x, f"opset {opset} dynamo={dynamo} fuse={fuse}")


@pytest.mark.subprocess
def test_import_fastdw_imports_no_exporter():
    """In a fresh interpreter, ``import fastdw`` imports neither onnxscript nor torch.onnx:
    the translations register when those are imported (tests/test_export_hooks.py); every
    export in this module is the plain call, with no fastdw-specific argument."""
    script = ("import sys, fastdw\n"
              "print(sorted(m for m in sys.modules if m.startswith(('onnx', 'torch.onnx'))))\n")
    proc = run_python(["-c", script])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]", proc.stdout

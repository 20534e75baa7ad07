"""ONNX: converted models export with both torch.onnx exporters, unchanged export calls, as
standard ONNX (a depthwise conv is a ``Conv`` with ``group = C``), and onnxruntime reproduces
the stock model's outputs (fp32, 1e-5) at batch sizes other than the traced one.

The fused Triton op's translations are in test_export_fused.py; ``import fastdw`` staying
cheap is tested at the end, the registration hook in test_export_hooks.py."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from tests.configs import assert_close_to_reference
from tests.export_cases import converted_model, depthwise_groups

BATCHES = (1, 3)  # the export traces batch 2


def export_onnx(model, x, dynamo: bool, opset=None) -> bytes:
    """``torch.onnx.export`` as a user writes it, plus a dynamic batch dimension."""
    f = io.BytesIO()
    if dynamo:
        kwargs = dict(dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    else:
        kwargs = dict(input_names=["input"], dynamic_axes={"input": {0: "batch"}})
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' deprecation and progress chatter
        torch.onnx.export(model, (x,), f, dynamo=dynamo, opset_version=opset, **kwargs)
    return f.getvalue()


def check_onnx_model(data: bytes, expected_groups, opset=None) -> onnx.ModelProto:
    """Standard ONNX only (checker-valid, no custom domain), the requested opset, and one
    ``Conv`` with ``group = C`` per depthwise conv."""
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model)
    domains = {n.domain for n in model.graph.node} - {"", "ai.onnx"}
    assert not domains, f"non-standard ONNX domains {domains}: " \
        f"{[n.op_type for n in model.graph.node if n.domain in domains]}"
    if opset is not None:
        assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {opset}
    groups = sorted(a.i for n in model.graph.node if n.op_type == "Conv"
                    for a in n.attribute if a.name == "group" and a.i > 1)
    assert groups == expected_groups, f"Conv groups {groups}, depthwise convs {expected_groups}"
    return model


def run_onnxruntime(data: bytes, x: torch.Tensor) -> torch.Tensor:
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return torch.from_numpy(np.asarray(out))


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


def test_import_fastdw_imports_no_exporter():
    """In a fresh interpreter, ``import fastdw`` imports neither onnxscript nor torch.onnx:
    the translations register when those are imported (tests/test_export_hooks.py); every
    export in this module is the plain call, with no fastdw-specific argument."""
    script = ("import sys, fastdw\n"
              "print(sorted(m for m in sys.modules if m.startswith(('onnx', 'torch.onnx'))))\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get(
        "PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]", proc.stdout

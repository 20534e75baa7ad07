"""What the export tests check on an exported model: ONNX bytes from ``torch.onnx.export`` as a
user calls it, the model's validity and ops, onnxruntime's output; TorchScript graphs' node
kinds."""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import onnx
import onnxruntime
import torch


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


def node_kinds(block) -> set:
    """Every node kind in a TorchScript graph or block, nested blocks (if/loop bodies)
    included."""
    kinds = set()
    for node in block.nodes():
        kinds.add(node.kind())
        for sub in node.blocks():
            kinds |= node_kinds(sub)
    return kinds

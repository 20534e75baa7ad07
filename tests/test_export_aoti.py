"""torch.export and AOTInductor: a converted model exports with a dynamic batch dimension and
keeps the fastdw ops; ``fastdw.export.decompositions()`` lowers them to ``aten.convolution``; an
AOTInductor package runs from Python and, with the fastdw library loaded, from C++ (the
recipe of docs/shipping.md, built here against the installed libtorch)."""
from __future__ import annotations

import os
import shutil
import subprocess
import zipfile

import pytest
import torch

import fastdw
from tests.support.reference_check import assert_close_to_reference
from tests.support.export_cases import converted_model, depthwise_groups

BATCH = torch.export.Dim("batch", min=1, max=64)
DEPTHWISE_OP = "fastdw.depthwise_conv2d.default"


def _export(model, x):
    return torch.export.export(model, (x,), dynamic_shapes=({0: BATCH},))


def _targets(program):
    return [str(n.target) for n in program.graph.nodes if n.op == "call_function"]


def _assert_like(actual_fn, expected_fn, x, what):
    for batch in (1, 3):  # the export traced batch 2
        xb = torch.randn(batch, *x.shape[1:])
        with torch.no_grad():
            assert_close_to_reference(actual_fn(xb), expected_fn(xb), torch.float32,
                                      f"{what} batch {batch}")


@pytest.mark.parametrize("fuse", [False, True])
def test_export_dynamic_batch_keeps_fastdw_ops(fuse, tmp_path):
    # The small model: MobileNetV2 goes through torch.export with a dynamic batch in
    # test_export_onnx.py's dynamo export (at ten times the cost), and test_integration.py.
    name = "multiplier2_dilation_same"
    stock, converted, x = converted_model(name, fuse)
    program = _export(converted, x)
    assert _targets(program).count(DEPTHWISE_OP) == len(depthwise_groups(stock))
    path = tmp_path / "model.pt2"
    torch.export.save(program, path)
    loaded = torch.export.load(path)
    for how, p in (("exported", program), ("saved and loaded", loaded)):
        _assert_like(p.module(), converted, x, f"{name} {how} fuse={fuse}")


@pytest.mark.parametrize("with_default_table", [False, True])
def test_decompositions_lower_to_aten_convolution(with_default_table):
    stock, converted, x = converted_model("multiplier2_dilation_same", fuse=True)
    table = fastdw.export.decompositions()
    if with_default_table:
        table = {**torch.export.default_decompositions(), **table}
    lowered = _export(converted, x).run_decompositions(table)
    targets = _targets(lowered)
    assert not [t for t in targets if "fastdw" in t], targets
    convolutions = [n for n in lowered.graph.nodes
                    if n.op == "call_function" and str(n.target) == "aten.convolution.default"]
    assert sorted(n.args[-1] for n in convolutions if n.args[-1] > 1) == depthwise_groups(stock)
    _assert_like(lowered.module(), stock, x, f"lowered (default table: {with_default_table})")


def test_decompositions_table_holds_the_registered_ops():
    table = fastdw.export.decompositions()
    assert torch.ops.fastdw.depthwise_conv2d.default in table
    fused_registered = torch._C._dispatch_has_kernel("fastdw::depthwise_separable_conv2d")
    assert (torch.ops.fastdw.depthwise_separable_conv2d.default in table
            if fused_registered else len(table) == 1)


# ---- AOTInductor ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def aoti_package(tmp_path_factory):
    """(converted model, input, package path): the model with multiplier 2, dilation, 'same'
    padding, BatchNorms folded and a separable chain fused, compiled once for the module."""
    stock, converted, x = converted_model("multiplier2_dilation_same", fuse=True)
    path = str(tmp_path_factory.mktemp("aoti") / "model.pt2")
    torch._inductor.aoti_compile_and_package(_export(converted, x), package_path=path)
    return converted, x, path


@pytest.mark.subprocess
def test_aoti_package_runs_in_python_calling_fastdw(aoti_package):
    converted, x, path = aoti_package
    with zipfile.ZipFile(path) as archive:  # the op is called, not inlined by Inductor
        assert any(b"fastdw::depthwise_conv2d" in archive.read(name)
                   for name in archive.namelist() if name.endswith(".json")), archive.namelist()
    _assert_like(torch._inductor.aoti_load_package(path), converted, x, "AOTInductor package")


def _build_cpp_loader(directory) -> str:
    from torch.utils import cpp_extension
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the loader")
    exe = os.path.join(directory, "aoti_loader")
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "aoti_loader.cpp")
    libs = cpp_extension.library_paths()
    cmd = [compiler, "-std=c++20", "-O0", source, "-o", exe,
           f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
           *[f"-I{p}" for p in cpp_extension.include_paths()],
           *[f"-L{p}" for p in libs], *[f"-Wl,-rpath,{p}" for p in libs],
           # --no-as-needed: keep libtorch.so loaded although main() calls nothing in it; the
           # package's wrapper library needs it and is dlopen-ed where our rpath does not reach
           "-Wl,--no-as-needed", "-ltorch", "-ltorch_cpu", "-lc10", "-Wl,--as-needed", "-ldl"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, " ".join(cmd) + "\n" + proc.stderr[-3000:]
    return exe


@pytest.mark.slow
def test_aoti_package_runs_from_cpp(aoti_package, tmp_path):
    converted, x, path = aoti_package
    exe = _build_cpp_loader(str(tmp_path))
    shape = (3, *x.shape[1:])
    args = [str(s) for s in shape]

    missing = subprocess.run([exe, "-", path, *args], capture_output=True, text=True)
    assert missing.returncode != 0
    assert "Could not find schema for fastdw::depthwise_conv2d" in missing.stderr, \
        missing.stderr[-2000:]

    proc = subprocess.run([exe, fastdw.export.library_path(), path, *args],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.split("\n")
    sizes = [int(s) for s in lines[0].split()]
    out = torch.tensor([float(v) for v in lines[1:] if v]).reshape(sizes)
    # The same input as the loader builds
    xb = torch.arange(x[0].numel() * shape[0], dtype=torch.float32).mul(0.37).sin().reshape(shape)
    with torch.no_grad():
        assert_close_to_reference(out, converted(xb), torch.float32, "AOTInductor from C++")

"""fastdw.export.import_hooks: how ``import fastdw`` registers the ONNX translations without
importing onnxscript or torch.onnx itself (test_export_onnx.py checks that it does not)."""
from __future__ import annotations

import inspect
import sys
import warnings

import pytest

from fastdw.export.import_hooks import after_import


@pytest.fixture
def module_file(tmp_path, monkeypatch):
    """A module name importable from a fresh file, and never imported before."""
    name = f"fastdw_hook_probe_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text("def probe():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_runs_once_right_after_the_import(module_file):
    calls = []
    finders = len(sys.meta_path)
    after_import(module_file, lambda: calls.append(module_file in sys.modules), "probe")
    assert calls == [] and len(sys.meta_path) == finders + 1
    module = __import__(module_file)
    assert calls == [True] and len(sys.meta_path) == finders  # one shot
    # the module looks as if the hook had never been there
    assert type(module.__loader__).__module__ != "fastdw.export.import_hooks"
    assert "return 42" in inspect.getsource(module.probe)
    del sys.modules[module_file]
    __import__(module_file)
    assert calls == [True]


def test_runs_now_when_already_imported():
    calls = []
    after_import("inspect", lambda: calls.append(1), "probe")
    assert calls == [1]


def test_a_failing_callback_warns_and_the_import_succeeds(module_file):
    def fail():
        raise KeyError("registry moved")

    after_import(module_file, fail, "registering the probe; do X instead")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert __import__(module_file).probe() == 42
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any("registering the probe; do X instead failed" in m and "registry moved" in m
               for m in messages), messages


def test_fastdw_ops_are_in_onnxscripts_registry():
    import fastdw  # noqa: F401
    from onnxscript.function_libs.torch_lib.registration import default_registry
    for name in ("fastdw::depthwise_conv2d", "fastdw::depthwise_separable_conv2d"):
        assert name in default_registry

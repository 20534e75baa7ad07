"""Shipping models that use fastdw: ONNX, TorchScript, torch.export and AOTInductor, C++.

What ``import fastdw`` sets up (docs/shipping.md has the recipes):

* ONNX, both exporters, with no change to the export call: ``torch.onnx.export(model, (x,))``
  (``dynamo=True``, opsets 18-23) and ``torch.onnx.export(..., dynamo=False)`` (opsets 9-20)
  write ``fastdw::depthwise_conv2d`` as a standard ``Conv`` with ``group = C`` and the fused
  separable op as ``Conv`` + activation + ``Conv``. The translations are registered when
  onnxscript's registry (``onnx_dynamo``) or ``torch.onnx`` (``onnx_torchscript``) is first
  imported, so ``import fastdw`` stays as fast as before.
* TorchScript: ``torch.jit.script`` and ``torch.jit.trace`` of ``fastdw.nn`` modules record
  ``fastdw::depthwise_conv2d`` (``torchscript``).
* torch.export: ``decompositions()`` lowers the fastdw ops to ``aten.convolution`` in
  ``ExportedProgram.run_decompositions``; without it an exported program keeps them, and
  AOTInductor calls them from the compiled package.
* C++ (a TorchScript file or an AOTInductor package that calls fastdw ops): load
  ``library_path()`` before loading the model.
"""
from __future__ import annotations

import importlib.util
from typing import Callable, Dict

import torch

from .decompositions import decompositions
from .import_hooks import after_import

__all__ = ["decompositions", "library_path", "onnx_translation_table"]


def library_path() -> str:
    """Path of the compiled library that registers the ``fastdw::`` ops with the dispatcher.

    A C++ program that runs a TorchScript file or an AOTInductor package containing fastdw ops
    loads it with ``dlopen(path, RTLD_LAZY | RTLD_GLOBAL)`` after libtorch; it needs libtorch
    only (its two Python C-API functions are never called from C++, so lazy binding leaves
    them unresolved)."""
    spec = importlib.util.find_spec("fastdw._C")
    if spec is None or spec.origin is None:
        raise ImportError("fastdw: the compiled extension fastdw._C is not built")
    return spec.origin


def onnx_translation_table() -> Dict[torch._ops.OpOverload, Callable]:
    """The fastdw ops' ONNX translations as ``torch.onnx.export(..., dynamo=True,
    custom_translation_table=...)`` takes them. ``import fastdw`` already registers them
    globally; pass this only where that registration warned that it failed."""
    from .onnx_dynamo import translation_table
    return translation_table()


def _register_onnx_dynamo() -> None:
    from . import onnx_dynamo  # noqa: F401  (importing registers)


def _register_onnx_torchscript() -> None:
    from .onnx_torchscript import register
    register()


after_import("onnxscript.function_libs.torch_lib.registration", _register_onnx_dynamo,
             "registering the ONNX translations of the fastdw ops for torch.onnx.export("
             "dynamo=True); pass custom_translation_table=fastdw.export.onnx_translation_table()")
after_import("torch.onnx", _register_onnx_torchscript,
             "registering the ONNX symbolics of the fastdw ops for torch.onnx.export("
             "dynamo=False); call fastdw.export.onnx_torchscript.register() after fixing it")

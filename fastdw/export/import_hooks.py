"""Run a function right after a module is first imported, without importing it ourselves.

fastdw registers its ONNX translations into onnxscript's registry and torch.onnx's symbolic
table. Importing those eagerly would add seconds to every ``import fastdw`` (onnxscript alone
is about as slow to import as torch on this project's machines), and most users never export.
So ``after_import`` waits: if the module is already imported it runs the function now;
otherwise a one-shot ``sys.meta_path`` finder wraps the module's loader and runs the function
as soon as the module has executed (the "post-import hook" of PEP 369 and of ``wrapt``).

A failing function never breaks the user's import: it becomes a warning that says what was not
registered and what to do instead.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings
from typing import Callable

__all__ = ["after_import"]


def _run(callback: Callable[[], None], what: str) -> None:
    try:
        callback()
    except Exception as e:  # noqa: BLE001 - reported, never raised into someone's import
        warnings.warn(f"fastdw: {what} failed ({type(e).__name__}: {e})", RuntimeWarning,
                      stacklevel=2)


class _Loader(importlib.abc.Loader):
    def __init__(self, loader, callback, what):
        self._loader, self._callback, self._what = loader, callback, what

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # The module should look as if we were never there (inspect reads __loader__).
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _run(self._callback, self._what)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, module_name, callback, what):
        self._module_name, self._callback, self._what = module_name, callback, what

    def find_spec(self, fullname, path, target=None):
        if fullname != self._module_name:
            return None
        if self in sys.meta_path:  # one shot (lets find_spec below use the real finders)
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader, self._callback, self._what)
        return spec


def after_import(module_name: str, callback: Callable[[], None], what: str) -> None:
    """Calls ``callback()`` once ``module_name`` is imported (now, if it already is).
    ``what`` names the action in the warning issued if ``callback`` raises."""
    if module_name in sys.modules:
        _run(callback, what)
    else:
        sys.meta_path.insert(0, _Finder(module_name, callback, what))

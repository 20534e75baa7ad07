"""The Triton mode of the fused-op tests: compiled kernels on a GPU; without one, the Triton
interpreter on CPU tensors.

TRITON_INTERPRET=1 must be set when fastdw.triton creates its kernels. ``import_fused`` sets
it only while importing fastdw.triton, then restores the environment; tests set it again
(monkeypatch) around each call, since backend selection reads it at call time, and other test
modules see the environment they were given. If fastdw.triton had already been imported without
it (compiled kernels, no GPU), ``RUNS_HERE`` is False: the in-process tests skip and
``rerun_in_subprocess`` reruns their module in a fresh interpreter with TRITON_INTERPRET=1.
"""
from __future__ import annotations

import os

import torch

from tests.support.child import child_env, run_pytest

HAS_CUDA = torch.cuda.is_available()


def import_fused():
    """fastdw.triton, interpreted when there is no GPU (unless it was imported before)."""
    saved = os.environ.get("TRITON_INTERPRET")
    if not HAS_CUDA:
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        import fastdw.triton as fused
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved
    return fused


def rerun_in_subprocess(test_file: str) -> None:
    """Runs ``test_file``'s tests, but not this rerun, with TRITON_INTERPRET=1; asserts they
    pass."""
    run_pytest(test_file, "in_subprocess", child_env(TRITON_INTERPRET="1"))


def cudnn_allow_tf32(allowed: bool):
    """torch.backends.cudnn.allow_tf32 for a block, through cudnn.flags(): a plain assignment
    raises once torch.testing._internal.common_utils (imported by the parity tests) has frozen
    the global flags."""
    cudnn = torch.backends.cudnn
    return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                       deterministic=cudnn.deterministic, allow_tf32=allowed)

"""The one place that knows which backends this build and machine have, and picks one."""
from __future__ import annotations

import os
from typing import Dict, Tuple

import torch

from . import ops  # noqa: F401  (loads the compiled library)
from .planner import CpuBackend

# fastdw.backends.cpu.benchmark = True: measure the CPU kernels on first use (fastdw.planner).
cpu = CpuBackend()


def cuda_kernels_built() -> bool:
    """True when fastdw._C was compiled with the CUDA kernels (a GPU is not needed for that)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("fastdw::depthwise_conv2d", "CUDA")


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_usable(device: torch.device) -> Tuple[bool, str]:
    """Whether the fused Triton kernel can run for tensors on ``device``, and why."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False, "triton is not installed"
    try:
        from . import triton as fused  # noqa: F401
    except ImportError as e:
        return False, f"fastdw.triton failed to import: {e}"
    if device.type == "cuda":
        return True, f"Triton {triton.__version__} on {torch.cuda.get_device_name(device)}"
    if device.type == "cpu" and triton_interpreting():
        return True, f"Triton {triton.__version__} interpreter (TRITON_INTERPRET=1)"
    return False, f"no GPU for Triton on {device.type} (set TRITON_INTERPRET=1 to interpret)"


def separable_backend(device: torch.device) -> Tuple[str, str]:
    """Backend for depthwise_separable_conv2d: ('triton', why) or ('composed', why)."""
    ok, why = triton_usable(device)
    return ("triton", why) if ok else ("composed", why + "; using fastdw depthwise + 1x1 conv")


def available_backends() -> Dict[str, str]:
    """The fastdw backends this build has on this machine, each with a one-line description."""
    found = {"fastdw-cpu": "C++ CPU kernels (forward, backward-input, backward-weight)"}
    if cuda_kernels_built():
        if torch.cuda.is_available():
            found["fastdw-cuda"] = f"CUDA kernels on {torch.cuda.get_device_name()}"
        else:
            found["fastdw-cuda"] = "CUDA kernels compiled in; no GPU visible, so not runnable"
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    ok, why = triton_usable(device)
    if ok:
        found["fastdw-triton"] = "fused depthwise+pointwise: " + why
    return found

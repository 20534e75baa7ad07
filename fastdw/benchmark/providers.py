"""Providers: the implementations a benchmark row can time.

``torch``          what PyTorch picks for ``F.conv2d(groups=C)`` (cuDNN, its native CUDA kernel,
                   oneDNN, ...), named by asking PyTorch's own backend selector
``fastdw-cpu``     fastdw's CPU op as planned (csrc/cpu/plan.h): its own kernels, or PyTorch's
                   convolution where a plan picks ``aten``; the row's backend names the kernels
``fastdw-cpu-kernels``  the same with fastdw's own kernels only (never ``aten``): what fastdw's
                   kernels themselves achieve
``fastdw-cuda``    fastdw's CUDA kernels (CUDA tensors)
``fastdw-triton``  the fused depthwise+pointwise Triton kernel (separable shapes only)

For separable shapes ``torch`` and ``fastdw-cpu``/``fastdw-cuda`` compose a depthwise conv
(PyTorch's, or fastdw's) with the activation and a 1x1 ``F.conv2d``; ``fastdw-triton`` calls
``fastdw.depthwise_separable_conv2d`` where its backend is the fused kernel.

Every provider returns the outputs of a pass as a tuple in one fixed order (see ``OUTPUTS``), so
the runner can check each against the float64 reference before timing it. A provider whose
backend is missing on this build or machine reports itself unavailable, with the reason.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..activations import ACTIVATIONS, activation_name
from .suites import Case

OUTPUTS = {
    ("depthwise", "fwd"): ("y",),
    ("depthwise", "bwd_input"): ("grad_input",),
    ("depthwise", "bwd_weight"): ("grad_weight", "grad_bias"),
    ("depthwise", "fwd+bwd"): ("y", "grad_input", "grad_weight", "grad_bias"),
    ("separable", "fwd"): ("y",),
    ("separable", "fwd+bwd"): ("y", "grad_input", "grad_dw_weight", "grad_dw_bias",
                               "grad_pw_weight", "grad_pw_bias"),
}
# Outputs with a batch dimension (the reference can be computed a few samples at a time).
BATCHED_OUTPUTS = ("y", "grad_input")



@dataclasses.dataclass
class Tensors:
    """Inputs of one case in one dtype and layout: ``x``, the weights and biases, and ``gy``
    (the incoming gradient, in the output's memory format)."""
    x: torch.Tensor
    weight: torch.Tensor
    bias: Optional[torch.Tensor]
    gy: torch.Tensor
    pw_weight: Optional[torch.Tensor] = None
    pw_bias: Optional[torch.Tensor] = None

    def params(self) -> List[torch.Tensor]:
        """The differentiable inputs after ``x``, in the order of OUTPUTS' gradients."""
        return [t for t in (self.weight, self.bias, self.pw_weight, self.pw_bias) if t is not None]


def make_tensors(case: Case, dtype: torch.dtype, device: torch.device, seed: int) -> Tensors:
    """Random normal (never zero) inputs, contiguous NCHW."""
    s = case.shape
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(*size, scale=1.0):
        t = torch.randn(size, generator=g, device=device, dtype=torch.float32)
        return (t * scale).to(dtype)

    oh, ow = s.out_hw
    x = randn(case.n, s.c, s.h, s.w)
    # Weights scaled like a trained layer's (fan-in), so sums stay O(1) in every dtype.
    weight = randn(s.c * s.m, 1, s.kh, s.kw, scale=(s.kh * s.kw) ** -0.5)
    bias = randn(s.c * s.m) if s.bias else None
    if s.kind == "separable":
        pw_weight = randn(s.c_out, s.c, 1, 1, scale=s.c ** -0.5)
        pw_bias = randn(s.c_out) if s.bias else None
        gy = randn(case.n, s.c_out, oh, ow)
        return Tensors(x, weight, bias, gy, pw_weight, pw_bias)
    gy = randn(case.n, s.c * s.m, oh, ow)
    return Tensors(x, weight, bias, gy)


def to_layout(t: Tensors, layout: str) -> Tensors:
    if layout == "nchw":
        return t
    cl = torch.channels_last
    return dataclasses.replace(t, x=t.x.contiguous(memory_format=cl),
                               gy=t.gy.contiguous(memory_format=cl))


def _conv_kwargs(case: Case):
    s = case.shape
    return dict(stride=s.stride, padding=s.padding, dilation=s.dilation)


def _fwd_bwd(forward: Callable, t: Tensors) -> Callable[[], Tuple[torch.Tensor, ...]]:
    """A function that runs forward and backward through autograd and returns
    ``(y, *grads)``; the leaves share storage with ``t``."""
    leaves = [t.x.detach().requires_grad_()] + [p.detach().requires_grad_() for p in t.params()]
    gy = t.gy

    def run():
        y = forward(*leaves)
        return (y.detach(), *torch.autograd.grad(y, leaves, gy))
    return run


# ---- PyTorch's routing --------------------------------------------------------------------

_TORCH_BACKEND_NAMES = {
    "Cudnn": "cudnn", "CudnnTranspose": "cudnn", "CudaDepthwise2d": "native",
    "Mkldnn": "onednn", "MkldnnEmpty": "onednn", "Slow2d": "native-slow",
    "SlowDilated2d": "native-dilated", "Miopen": "miopen", "MiopenDepthwise": "miopen",
    "Mps": "mps", "Empty": "empty", "Overrideable": "overrideable",
}


def _torch_backend_by_rule(x, weight, stride, dilation) -> str:
    """PyTorch's documented routing, for builds without ``torch._C._select_conv_backend``."""
    c, w = x.shape[1], x.shape[3]
    kh, kw = weight.shape[2], weight.shape[3]
    if x.device.type == "cuda":
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            return "cudnn"
        if (x.dtype == torch.float16 and kh == kw and kh in (1, 3, 5) and stride[0] == stride[1]
                and tuple(dilation) == (1, 1) and c >= 32 and w >= 7):
            return "cudnn"
        return "native"
    if torch.backends.mkldnn.is_available() and torch._C._get_mkldnn_enabled() \
            and x.dtype in (torch.float32, torch.bfloat16):
        return "onednn"
    return "native-slow"


def torch_conv_backend(x, weight, bias, stride, padding, dilation) -> str:
    """The backend PyTorch routes this grouped convolution to: asked of PyTorch's own
    selector (the function ``F.conv2d`` consults), or by its documented rule."""
    select = getattr(torch._C, "_select_conv_backend", None)
    if select is not None:
        try:
            backend = select(x, weight, bias, list(stride), list(padding), list(dilation),
                             False, [0, 0], x.shape[1], None)
            name = str(backend).rsplit(".", 1)[-1]
            return _TORCH_BACKEND_NAMES.get(name, name.lower())
        except (RuntimeError, TypeError):
            pass
    return _torch_backend_by_rule(x, weight, stride, dilation)


# ---- providers ----------------------------------------------------------------------------

class Provider:
    name = ""
    kinds: Tuple[str, ...] = ("depthwise", "separable")
    description = ""

    def availability(self, device: torch.device) -> Tuple[bool, str]:
        raise NotImplementedError

    def backend(self, case: Case, t: Tensors, pass_: str = "fwd") -> str:
        raise NotImplementedError

    def build(self, case: Case, pass_: str, t: Tensors) -> Callable[[], Tuple[torch.Tensor, ...]]:
        raise NotImplementedError


class TorchProvider(Provider):
    name = "torch"
    description = "what PyTorch picks for F.conv2d(groups=C) (composed with a 1x1 conv for " \
                  "separable shapes)"

    def availability(self, device):
        return True, f"PyTorch {torch.__version__}"

    def backend(self, case, t, pass_="fwd"):
        s = case.shape
        name = torch_conv_backend(t.x, t.weight, t.bias, s.stride, s.padding, s.dilation)
        return f"dw:{name}" if s.kind == "separable" else name

    def build(self, case, pass_, t):
        s = case.shape
        kw = _conv_kwargs(case)
        groups = s.c
        if s.kind == "separable":
            act = ACTIVATIONS[activation_name(s.activation)].apply

            def forward(x, w, b, pw, pb):
                return F.conv2d(act(F.conv2d(x, w, b, groups=groups, **kw)), pw, pb)
        else:
            def forward(x, w, b=None):
                return F.conv2d(x, w, b, groups=groups, **kw)
        if pass_ == "fwd":
            args = [t.x] + t.params()
            return lambda: (forward(*args),)
        if pass_ == "fwd+bwd":
            return _fwd_bwd(forward, t)
        conv_bwd = torch.ops.aten.convolution_backward.default
        stride, padding, dilation = list(s.stride), list(s.padding), list(s.dilation)
        if pass_ == "bwd_input":
            return lambda: (conv_bwd(t.gy, t.x, t.weight, None, stride, padding, dilation, False,
                                     [0, 0], groups, [True, False, False])[0],)
        if pass_ == "bwd_weight":
            bias_sizes = [t.weight.shape[0]]
            return lambda: conv_bwd(t.gy, t.x, t.weight, bias_sizes, stride, padding, dilation,
                                    False, [0, 0], groups, [False, True, True])[1:]
        raise ValueError(pass_)


def _fastdw():
    """The fastdw package (already imported by ``python -m fastdw``)."""
    import fastdw
    return fastdw


class FastdwKernelProvider(Provider):
    """fastdw's depthwise kernels on one device type; ``own_kernels``: on the CPU, never
    PyTorch's convolution (the planner's ``aten``)."""

    def __init__(self, device_type: str, own_kernels: bool = False):
        self.device_type = device_type
        self.own_kernels = own_kernels
        self.name = f"fastdw-{device_type}" + ("-kernels" if own_kernels else "")
        self.description = (
            f"fastdw depthwise kernels on {device_type}"
            + (", own kernels only (never aten)" if own_kernels else
               (", as planned (may pick aten)" if device_type == "cpu" else ""))
            + " (composed with a 1x1 F.conv2d for separable shapes)")

    def availability(self, device):
        if device.type != self.device_type:
            return False, f"benchmarking on {device.type}, not {self.device_type}"
        try:
            from fastdw import backends
        except ImportError as e:
            return False, f"fastdw failed to import: {e}"
        found = backends.available_backends()
        base = f"fastdw-{self.device_type}"
        if base not in found:
            return False, f"not in this build (available: {', '.join(found) or 'none'})"
        if self.device_type == "cuda" and not torch.cuda.is_available():
            return False, found[base]
        return True, found[base]

    def backend(self, case, t, pass_="fwd"):
        """CUDA: 'cuda'. CPU: the planned kernel of each pass the row runs (fwd/bwd_input/
        bwd_weight), asked after the row's first call (so benchmark-mode plans show)."""
        if self.device_type != "cpu":
            return "cuda"
        from fastdw import planner
        s = case.shape
        passes = ("fwd", "bwd_input", "bwd_weight") if pass_ == "fwd+bwd" else (pass_,)
        with planner.force(kernel="fastdw" if self.own_kernels else None):
            kernels = [planner.explain(t.x, t.weight, s.stride, s.padding, s.dilation, p,
                                       grad_output=t.gy).kernel for p in passes]
        return "/".join(kernels)

    def build(self, case, pass_, t):
        fn = self._build(case, pass_, t)
        if not self.own_kernels:
            return fn
        from fastdw import planner
        return planner.with_own_kernels(fn)

    def _build(self, case, pass_, t):
        fastdw = _fastdw()
        s = case.shape
        kw = _conv_kwargs(case)
        if s.kind == "separable":
            act = ACTIVATIONS[activation_name(s.activation)].apply

            def forward(x, w, b, pw, pb):
                return F.conv2d(act(fastdw.depthwise_conv2d(x, w, b, **kw)), pw, pb)
        else:
            def forward(x, w, b=None):
                return fastdw.depthwise_conv2d(x, w, b, **kw)
        if pass_ == "fwd":
            args = [t.x] + t.params()
            return lambda: (forward(*args),)
        if pass_ == "fwd+bwd":
            return _fwd_bwd(forward, t)
        ops = torch.ops.fastdw
        stride, padding, dilation = list(s.stride), list(s.padding), list(s.dilation)
        if pass_ == "bwd_input":
            size = list(t.x.shape)
            return lambda: (ops.depthwise_conv2d_backward_input(
                t.gy, t.weight, size, stride, padding, dilation),)
        if pass_ == "bwd_weight":
            size = list(t.weight.shape)
            return lambda: tuple(ops.depthwise_conv2d_backward_weight(
                t.gy, t.x, size, stride, padding, dilation))
        raise ValueError(pass_)


def _separable_fn():
    fastdw = _fastdw()
    fn = getattr(fastdw, "depthwise_separable_conv2d", None)
    if fn is None:
        for module in ("fastdw.separable", "fastdw.triton"):
            try:
                fn = getattr(__import__(module, fromlist=["_"]), "depthwise_separable_conv2d", None)
            except ImportError:
                continue
            if fn is not None:
                break
    return fn


class TritonProvider(Provider):
    name = "fastdw-triton"
    kinds = ("separable",)
    description = "fastdw.depthwise_separable_conv2d on its fused Triton kernel"

    def availability(self, device):
        try:
            fn = _separable_fn()
            from fastdw import backends
        except ImportError as e:
            return False, f"fastdw failed to import: {e}"
        if fn is None:
            return False, "fastdw.depthwise_separable_conv2d is not in this build"
        try:
            backend, why = backends.separable_backend(device)
        except Exception as e:  # noqa: BLE001 - a broken optional backend is reported, not raised
            return False, f"fastdw.backends.separable_backend failed: {e}"
        if backend != "triton":
            return False, why
        if device.type != "cuda":   # the interpreter: right answers, meaningless times
            return False, why + ": not timed (`python -m fastdw check` tests it)"
        return True, why

    def backend(self, case, t, pass_="fwd"):
        """'triton', or the path fastdw actually takes for these tensors if it is not."""
        try:
            from fastdw.separable import backend_for
        except ImportError:
            return "triton"
        return backend_for(t.x, t.weight)[0]

    def build(self, case, pass_, t):
        fn = _separable_fn()
        s = case.shape
        kw = _conv_kwargs(case)

        def forward(x, w, b, pw, pb):
            return fn(x, w, b, pw, pb, activation=s.activation, **kw)
        if pass_ == "fwd":
            args = [t.x] + t.params()
            return lambda: (forward(*args),)
        if pass_ == "fwd+bwd":
            return _fwd_bwd(forward, t)
        raise ValueError(pass_)


def all_providers() -> Dict[str, Provider]:
    return {p.name: p for p in (TorchProvider(), FastdwKernelProvider("cpu"),
                                FastdwKernelProvider("cpu", own_kernels=True),
                                FastdwKernelProvider("cuda"), TritonProvider())}


PROVIDER_NAMES = tuple(all_providers())

"""The float64 reference a provider's outputs must match before they are timed.

The reference is ``fastdw.reference`` (``F.conv2d`` upcast to float64, on the benchmark's device)
applied to the very inputs the providers get, so only the providers' arithmetic is judged. Cases
too large to hold in float64 at once are computed a few samples at a time: outputs with a batch
dimension are compared slice by slice, weight gradients are summed over the slices.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, Iterator, List, Sequence, Tuple

import torch

from .. import reference
from .providers import BATCHED_OUTPUTS, Tensors
from .suites import Case

# Largest ||out - ref|| / ||ref|| accepted, per dtype (fp32 accumulation for half types).
TOLERANCES = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 5e-3,
              torch.bfloat16: 3e-2}
# A float32 pointwise conv may run on TF32 tensor cores (PyTorch's cuDNN default, Triton's
# default for a float32 dot): about 1e-3.
TF32_TOLERANCE = 2e-3
# A single element may be off by at most this many tolerances of the largest reference value.
MAX_ELEMENT_FACTOR = 10.0


def tolerance(case: Case, dtype: torch.dtype, device: torch.device) -> float:
    if dtype == torch.float32 and case.shape.kind == "separable" and device.type == "cuda":
        return TF32_TOLERANCE
    return TOLERANCES[dtype]


@dataclasses.dataclass
class Error:
    """Distance of one output from the reference."""
    rel_l2: float       # ||out - ref|| / ||ref||
    max_rel: float      # max |out - ref| / max |ref|
    nonfinite: int      # NaN or inf elements in out

    def ok(self, tol: float) -> bool:
        return (self.nonfinite == 0 and self.rel_l2 <= tol
                and self.max_rel <= MAX_ELEMENT_FACTOR * tol)


class _Stats:
    def __init__(self):
        self.diff2 = self.ref2 = self.maxdiff = self.maxref = 0.0
        self.nonfinite = 0

    def add(self, actual: torch.Tensor, expected: torch.Tensor, what: str):
        if actual.shape != expected.shape:
            raise ValueError(f"{what}: shape {tuple(actual.shape)}, expected "
                             f"{tuple(expected.shape)}")
        a = actual.detach().to(torch.float64)
        expected = expected.detach()
        d = a - expected
        bad = int(d.numel() - torch.isfinite(a).sum())
        if bad:
            self.nonfinite += bad
            d = torch.nan_to_num(d, nan=0.0, posinf=0.0, neginf=0.0)
        norm = torch.linalg.vector_norm
        self.diff2 += float(norm(d)) ** 2
        self.ref2 += float(norm(expected)) ** 2
        if d.numel():
            self.maxdiff = max(self.maxdiff, float(norm(d, math.inf)))
            self.maxref = max(self.maxref, float(norm(expected, math.inf)))

    def error(self) -> Error:
        rel = math.sqrt(self.diff2 / self.ref2) if self.ref2 > 0 else math.sqrt(self.diff2)
        mx = self.maxdiff / self.maxref if self.maxref > 0 else self.maxdiff
        return Error(rel, mx, self.nonfinite)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> Error:
    """Error of one tensor against its (float64) reference."""
    st = _Stats()
    st.add(actual, expected.to(torch.float64), "output")
    return st.error()


class Reference:
    """Float64 outputs of a case, computed from its (contiguous) inputs once and cached when
    they fit in ``max_bytes``, otherwise recomputed slice by slice at each comparison."""

    def __init__(self, case: Case, t: Tensors, need_grads: bool, max_bytes: int = 2 << 30):
        self.case, self.t, self.need_grads = case, t, need_grads
        s = case.shape
        oh, ow = s.out_hw
        per_sample = 8 * (s.c * s.h * s.w + s.channels_out * oh * ow
                          + (s.c * oh * ow if s.kind == "separable" else 0))
        per_sample *= 3 if need_grads else 1   # gradients and what autograd saves
        self.chunk = max(1, min(case.n, max_bytes // max(per_sample, 1)))
        self._cache: List[Tuple[slice, Dict[str, torch.Tensor]]] = []
        self._reduced: Dict[str, torch.Tensor] = {}

    def _compute(self, sl: slice) -> Dict[str, torch.Tensor]:
        s, t = self.case.shape, self.t
        x = t.x[sl].to(torch.float64).requires_grad_(self.need_grads)
        params = [p.to(torch.float64).requires_grad_(self.need_grads) for p in t.params()]
        kw = dict(stride=s.stride, padding=s.padding, dilation=s.dilation, upcast=True)
        with torch.enable_grad():
            if s.kind == "separable":
                y = reference.depthwise_separable_conv2d(x, *params, activation=s.activation,
                                                         **kw)
                names = ["grad_dw_weight", "grad_dw_bias", "grad_pw_weight", "grad_pw_bias"]
            else:
                y = reference.depthwise_conv2d(x, *params, **kw)
                names = ["grad_weight", "grad_bias"][:len(params)]
        out = {"y": y.detach()}
        if self.need_grads:
            gy = t.gy[sl].to(torch.float64)
            grads = torch.autograd.grad(y, [x] + params, gy)
            out["grad_input"] = grads[0]
            out.update(zip(names, grads[1:]))
            if s.kind == "depthwise" and "grad_bias" not in out:
                out["grad_bias"] = gy.sum((0, 2, 3))   # what the bias gradient would be
        return out

    def _slices(self) -> Iterator[Tuple[slice, Dict[str, torch.Tensor]]]:
        if self._cache:
            yield from self._cache
            return
        n, step = self.case.n, self.chunk
        keep = step >= n
        for start in range(0, n, step):
            sl = slice(start, min(n, start + step))
            part = self._compute(sl)
            if keep:
                self._cache.append((sl, part))
            yield sl, part

    def compare(self, names: Sequence[str], outputs: Sequence[torch.Tensor]) -> Dict[str, Error]:
        """Errors of ``outputs`` (named ``names``) against the reference."""
        if len(outputs) != len(names):
            raise ValueError(f"expected {len(names)} outputs ({', '.join(names)}), got "
                             f"{len(outputs)}")
        got = dict(zip(names, outputs))
        stats = {name: _Stats() for name in names}
        reduced: Dict[str, torch.Tensor] = {}
        for sl, part in self._slices():
            for name in names:
                if name in BATCHED_OUTPUTS:
                    stats[name].add(got[name][sl], part[name], name)
                elif name not in self._reduced:   # weight gradients: summed over slices
                    reduced[name] = part[name] + reduced[name] if name in reduced else part[name]
        self._reduced.update(reduced)
        for name in names:
            if name not in BATCHED_OUTPUTS:
                stats[name].add(got[name], self._reduced[name], name)
        return {name: st.error() for name, st in stats.items()}

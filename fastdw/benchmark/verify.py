"""The float64 reference a provider's outputs must match before they are timed, under the one
error-bound rule of ``fastdw.accuracy``.

The reference is ``fastdw.reference`` (``F.conv2d`` upcast to float64, on the benchmark's device)
applied to the very inputs the providers get, so only the providers' arithmetic is judged; it
is evaluated on absolute values and on ones too, for each element's magnitude and number of
terms. Cases too large to hold in float64 at once are computed a few samples at a time: outputs
with a batch dimension are compared slice by slice, weight gradients are summed over the slices.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from .. import accuracy, reference
from .providers import BATCHED_OUTPUTS, Tensors
from .suites import Case


def rounded_to(case: Case, dtype: torch.dtype, device: torch.device) -> Optional[str]:
    """The format the factors of a case's products pass through (fastdw.accuracy.ROUNDED_TO):
    a float32 pointwise conv on a GPU may run on TF32 tensor cores (cuDNN's default, Triton's
    default for a float32 dot); the separable conv's intermediate is rounded to a half dtype."""
    if case.shape.kind != "separable":
        return None
    if dtype == torch.float32:
        return "tf32" if device.type == "cuda" else None
    return {torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(dtype)


@dataclasses.dataclass
class Error:
    """Distance of one output from the reference, over all its slices."""
    worst: float = 0.0        # max |out - ref| / allowed error (<= 1 passes)
    off: int = 0              # elements beyond their bound
    diff2: float = 0.0
    ref2: float = 0.0
    detail: str = ""

    @property
    def rel_l2(self) -> float:
        """||out - ref|| / ||ref||, for reports."""
        return math.sqrt(self.diff2 / self.ref2) if self.ref2 > 0 else math.sqrt(self.diff2)

    def ok(self, worst_allowed: float = 1.0) -> bool:
        return self.off == 0 or self.worst <= worst_allowed

    def add(self, actual: torch.Tensor, expected: accuracy.Expected, dtype: torch.dtype,
            rounded: Optional[str], what: str):
        try:
            v = accuracy.compare(actual, expected, dtype, rounded)
        except ValueError as e:   # a shape mismatch: name the output
            raise ValueError(f"{what}: {e}") from None
        self.worst = max(self.worst, v.worst)
        if v.off and not self.detail:
            self.detail = v.detail
        self.off += v.off
        self.diff2 += v.diff_norm ** 2
        self.ref2 += v.ref_norm ** 2


def relative_error(actual: torch.Tensor, expected: accuracy.Expected,
                   rounded: Optional[str] = None) -> Error:
    """Error of one tensor against its expectation (fastdw.accuracy.expected)."""
    e = Error()
    e.add(actual, expected, actual.dtype, rounded, "output")
    return e


def _sum(a: accuracy.Expected, b: accuracy.Expected) -> accuracy.Expected:
    return accuracy.Expected(a.value + b.value, a.magnitude + b.magnitude, a.terms + b.terms)


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
        per_sample *= 3                          # values, magnitudes and term counts
        self.chunk = max(1, min(case.n, max_bytes // max(per_sample, 1)))
        self._cache: List[Tuple[slice, Dict[str, accuracy.Expected]]] = []
        self._reduced: Dict[str, accuracy.Expected] = {}

    def _compute(self, sl: slice) -> Dict[str, accuracy.Expected]:
        s, t = self.case.shape, self.t
        params = list(t.params())
        kw = dict(stride=s.stride, padding=s.padding, dilation=s.dilation)
        if s.kind == "separable":
            fn = functools.partial(reference.depthwise_separable_conv2d,
                                   activation=s.activation, **kw)
            bound_fn = functools.partial(fn, bound=True)
            names = ["grad_dw_weight", "grad_dw_bias", "grad_pw_weight", "grad_pw_bias"]
        else:
            if len(params) == 1:   # the bias gradient is judged even without a bias
                params.append(torch.zeros(params[0].shape[0], dtype=params[0].dtype,
                                          device=params[0].device))
            fn = bound_fn = functools.partial(reference.depthwise_conv2d, **kw)
            names = ["grad_weight", "grad_bias"]
        expected = accuracy.expected(fn, [t.x[sl]] + params,
                                     t.gy[sl] if self.need_grads else None, bound_fn)
        out = {"y": expected[0]}
        if self.need_grads:
            out["grad_input"] = expected[1]
            out.update(zip(names, expected[2:]))
        return out

    def _slices(self) -> Iterator[Tuple[slice, Dict[str, accuracy.Expected]]]:
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

    def compare(self, names: Sequence[str], outputs: Sequence[torch.Tensor],
                dtype: torch.dtype, rounded: Optional[str] = None) -> Dict[str, Error]:
        """Errors of ``outputs`` (named ``names``, results of ``dtype``) against the
        reference."""
        if len(outputs) != len(names):
            raise ValueError(f"expected {len(names)} outputs ({', '.join(names)}), got "
                             f"{len(outputs)}")
        got = dict(zip(names, outputs))
        errors = {name: Error() for name in names}
        reduced: Dict[str, accuracy.Expected] = {}
        for sl, part in self._slices():
            for name in names:
                if name in BATCHED_OUTPUTS:
                    errors[name].add(got[name][sl], part[name], dtype, rounded, name)
                elif name not in self._reduced:   # weight gradients: summed over slices
                    reduced[name] = _sum(reduced[name], part[name]) if name in reduced \
                        else part[name]
        self._reduced.update(reduced)
        for name in names:
            if name not in BATCHED_OUTPUTS:
                errors[name].add(got[name], self._reduced[name], dtype, rounded, name)
        return errors

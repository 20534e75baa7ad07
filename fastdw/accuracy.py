"""How far a result may be from its float64 reference: the one rule of fastdw's tests, of
``python -m fastdw check`` and of the benchmark (which refuses to time a wrong answer).

Each element a convolution or one of its gradients produces is a sum of ``n`` products. Summed in
a floating-point format of unit roundoff ``u``, in any order, its error is at most
``gamma(n) * M`` with ``gamma(n) = n u / (1 - n u)`` and ``M`` the sum of the products' absolute
values (N. J. Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., SIAM 2002,
section 3.1, eq. 3.5). Rounding errors of real data do not all push one way: modelled as
independent random variables, the error stays below ``lambda * sqrt(n) * u * M`` except with
probability about ``2 n exp(-lambda^2 / 2)`` (N. J. Higham and T. Mary, "A New Approach to
Probabilistic Rounding Error Analysis", SIAM J. Sci. Comput. 41(5), 2019, Theorem 3.1); with
``lambda = 10`` that is below 1e-16 per sum. The result is then rounded once to its dtype. So,
per element ``i``::

    allowed_i = u_out |ref_i| + (min(gamma(n_i), lambda sqrt(n_i) u_acc) + 2 u_in) M_i + tiny

- ``u_out``: unit roundoff of the result's dtype;
- ``u_acc``: of the accumulation: float64 for float64 results, float32 for every other dtype
  (fastdw accumulates half types in float32);
- ``u_in``: of a format the factors are rounded to on the way (TF32 tensor cores, a bfloat16
  intermediate of the fused separable kernel), else 0;
- ``M_i`` and ``n_i``: the reference evaluated on absolute values and on ones
  (:func:`expected`);
- ``tiny``: the smallest normal number of the result's dtype.

Where a comparison cannot evaluate the reference on absolute values (a whole model, a
``torch.func`` transform), ``M = max(1, max |ref|)`` and ``n`` is a stated reduction length: the
same rule with a magnitude of the right size for data that does not cancel systematically.
Non-finite reference elements must be matched exactly (NaN by NaN, an infinity by the same one).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence, Tuple, Union

import torch

LAMBDA = 10.0
# The reduction length stated where a comparison cannot count terms (Expected.of_size): it
# covers the convolutions of the tests and checks (k*k*C and N*OH*OW up to 1024).
STATED_TERMS = 1024
# Roundoff of a format the factors pass through, by name (TF32: 10 explicit mantissa bits).
ROUNDED_TO = {"tf32": 2.0 ** -11, "bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}


def unit_roundoff(dtype: torch.dtype) -> float:
    """Half the machine epsilon of a floating-point dtype."""
    return torch.finfo(dtype).eps / 2


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype fastdw sums in for results of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def gamma(terms: Union[torch.Tensor, float], dtype: torch.dtype) -> Union[torch.Tensor, float]:
    """``min(n u / (1 - n u), LAMBDA sqrt(n) u)`` for sums of ``terms`` products accumulated in
    ``accumulation_dtype(dtype)`` (elementwise for a tensor of lengths)."""
    u = unit_roundoff(accumulation_dtype(dtype))
    n = torch.as_tensor(terms, dtype=torch.float64).clamp_min(1.0)
    bound = torch.minimum(n * u / (1 - n * u).clamp_min(1e-300), LAMBDA * n.sqrt() * u)
    return bound if isinstance(terms, torch.Tensor) else bound.item()


@dataclasses.dataclass
class Expected:
    """A float64 reference result with what its error bound needs: ``magnitude`` (sum of the
    absolute values of the products of each element) and ``terms`` (their number), each a
    tensor of the value's shape or a scalar for all elements."""
    value: torch.Tensor
    magnitude: Union[torch.Tensor, float]
    terms: Union[torch.Tensor, float]

    @classmethod
    def of_size(cls, value: torch.Tensor, terms: float = STATED_TERMS) -> "Expected":
        """For a reference that cannot be evaluated on absolute values: magnitude
        ``max(1, max |value|)``, ``terms`` as stated."""
        finite = value[torch.isfinite(value)] if value.numel() else value
        peak = float(finite.abs().max()) if finite.numel() else 0.0
        return cls(value, max(1.0, peak), terms)


def allowed_error(expected: Expected, dtype: torch.dtype,
                  rounded_to: Optional[str] = None) -> torch.Tensor:
    """The per-element bound of the module docstring for a result of ``dtype`` (float64 tensor
    of the value's shape). ``rounded_to``: a key of ``ROUNDED_TO`` or None."""
    ref = expected.value.to(torch.float64)
    u_in = ROUNDED_TO[rounded_to] if rounded_to else 0.0
    relative = gamma(expected.terms, dtype) + 2 * u_in
    magnitude = expected.magnitude
    if isinstance(magnitude, torch.Tensor):
        magnitude = magnitude.to(device=ref.device, dtype=torch.float64)
    if isinstance(relative, torch.Tensor):
        relative = relative.to(ref.device)
    return (unit_roundoff(dtype) * ref.abs() + relative * magnitude
            + torch.finfo(dtype).tiny)


@dataclasses.dataclass
class Verdict:
    """The outcome of comparing a result with its reference."""
    worst: float          # max |actual - ref| / allowed (<= 1 passes; inf for a non-finite
                          # element where the reference differs)
    diff_norm: float      # ||actual - ref|| over the reference's finite elements
    ref_norm: float       # ||ref|| over the same
    off: int              # elements beyond their bound (or non-finite where ref is not)
    numel: int
    first: Optional[Tuple[int, ...]] = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.off == 0

    @property
    def rel_l2(self) -> float:
        """||actual - ref|| / ||ref|| (for reports)."""
        return self.diff_norm / self.ref_norm if self.ref_norm > 0 else self.diff_norm

    def message(self, what: str) -> str:
        return (f"{what}: {self.off} of {self.numel} elements beyond the error bound of "
                f"fastdw.accuracy; {self.detail}; worst |error| / bound {self.worst:.3g}, "
                f"relative L2 error {self.rel_l2:.3g}")


def compare(actual: torch.Tensor, expected: Expected, dtype: Optional[torch.dtype] = None,
            rounded_to: Optional[str] = None) -> Verdict:
    """``actual`` (any dtype and device) against ``expected`` under the rule for results of
    ``dtype`` (default: ``actual.dtype``).

    Raises:
        ValueError: if the shapes differ.
    """
    dtype = dtype or actual.dtype
    want = expected.value.detach().to(torch.float64)
    got = actual.detach().to(device=want.device, dtype=torch.float64)
    if got.shape != want.shape:
        raise ValueError(f"shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    bound = allowed_error(expected, dtype, rounded_to)
    err = (got - want).abs()
    finite = torch.isfinite(want)
    same_special = (got == want) | (torch.isnan(got) & torch.isnan(want))
    bad = torch.where(finite, ~(err <= bound), ~same_special)
    measurable = finite & torch.isfinite(err)
    ratio = torch.where(measurable, err / bound,
                        torch.where(bad, math.inf, 0.0).to(torch.float64))
    diff = torch.where(finite, got - want, torch.zeros_like(got)).nan_to_num(0.0, 0.0, 0.0)
    verdict = Verdict(worst=float(ratio.max()) if ratio.numel() else 0.0,
                      diff_norm=float(torch.linalg.vector_norm(diff)),
                      ref_norm=float(torch.linalg.vector_norm(torch.where(finite, want, 0.0))),
                      off=int(bad.sum()), numel=bad.numel())
    if verdict.off:
        idx = tuple(int(i) for i in torch.nonzero(bad)[0])
        verdict.first = idx
        verdict.detail = (f"first at {idx}: got {got[idx].item()!r}, expected "
                          f"{want[idx].item()!r}, bound {bound[idx].item():.3g} ({dtype}"
                          f"{', factors rounded to ' + rounded_to if rounded_to else ''})")
    return verdict


def expected(fn: Callable[..., torch.Tensor], inputs: Sequence[Optional[torch.Tensor]],
             grad_output: Optional[torch.Tensor] = None,
             bound_fn: Optional[Callable[..., torch.Tensor]] = None,
             ) -> Tuple[Expected, ...]:
    """The float64 reference ``fn(*inputs)`` and, for ``grad_output``, its gradients with
    respect to every input that is not None, each with its magnitude and number of terms.

    ``fn`` must be a composition of sums of products (a convolution, an activation bounded as
    ``bound_fn`` says): it is evaluated three times, on the inputs, on their absolute values
    (the magnitudes) and on ones (the numbers of terms), ``bound_fn`` (default ``fn``) doing the
    last two. Returns ``(output, grad_0, grad_1, ...)`` over the non-None inputs."""
    bound_fn = bound_fn or fn

    def run(f, leaves, g):
        leaves = [None if t is None else t.detach().to(torch.float64).requires_grad_(g is not None)
                  for t in leaves]
        with torch.enable_grad():
            out = f(*leaves)
            if g is None:
                return [out.detach()]
            used = [t for t in leaves if t is not None]
            grads = torch.autograd.grad(out, used, g.to(device=out.device, dtype=torch.float64),
                                        allow_unused=True)
        return [out.detach()] + [torch.zeros_like(t) if d is None else d
                                 for t, d in zip(used, grads)]

    values = run(fn, inputs, grad_output)
    magnitudes = run(bound_fn, [None if t is None else t.abs() for t in inputs],
                     None if grad_output is None else grad_output.abs())
    terms = run(bound_fn, [None if t is None else torch.ones_like(t, dtype=torch.float64)
                           for t in inputs],
                None if grad_output is None else torch.ones_like(grad_output,
                                                                 dtype=torch.float64))
    return tuple(Expected(v, m, n) for v, m, n in zip(values, magnitudes, terms))

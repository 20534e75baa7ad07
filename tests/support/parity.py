"""Parity checks: a depthwise conv2d implementation against PyTorch itself.

Every check takes ``impl``, a callable with F.conv2d's depthwise signature,
``impl(input, weight, bias=None, stride=1, padding=0, dilation=1) -> output``, and compares it
with ``F.conv2d(..., groups=C)``: values against float64, layouts against F.conv2d in the same
dtype, gradients, forward-mode AD, torch.func transforms, exception types and non-finite
propagation. The CPU tests pass ``fastdw.depthwise_conv2d``; a harness that exposes other
kernels as ops on CPU tensors passes those. Failures raise AssertionError naming the case and
the worst mismatch.

Cases come from PyTorch's own test material: the OpInfo samples of ``nn.functional.conv2d``
(``opinfo_cases``) and its error inputs (``error_cases``), made depthwise.
"""
from __future__ import annotations

import dataclasses
import itertools
import warnings
import zlib
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.autograd import forward_ad as fwAD

from tests.support.reference_check import assert_close_to_reference

Impl = Callable[..., torch.Tensor]
DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
CL = torch.channels_last


def reference(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """What every check compares with: F.conv2d with groups = input channels."""
    return F.conv2d(input, weight, bias, stride, padding, dilation, groups=input.shape[-3])


# ---- cases --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Case:
    """One depthwise conv: input shape (4-D or unbatched 3-D), kernel (kh, kw), multiplier m,
    bias or not, and stride/padding/dilation exactly as given to F.conv2d (any accepted form)."""
    input_shape: Tuple[int, ...]
    kernel: Tuple[int, int]
    m: int = 1
    bias: bool = True
    conv: Tuple[Tuple[str, object], ...] = ()

    def __str__(self):
        kw = ",".join(f"{k}={v}" for k, v in self.conv)
        return (f"x{'x'.join(map(str, self.input_shape))}_k{self.kernel[0]}x{self.kernel[1]}"
                f"_m{self.m}{'_b' if self.bias else ''}{'_' + kw if kw else ''}")

    @property
    def kwargs(self) -> Dict[str, object]:
        return dict(self.conv)

    @property
    def channels(self) -> int:
        return self.input_shape[-3]

    def make(self, dtype=torch.float64, device="cpu", requires_grad=False):
        """Random (never zero), reproducible input, weight and bias (None without bias)."""
        g = torch.Generator().manual_seed(zlib.crc32(str(self).encode()))
        x = torch.randn(self.input_shape, generator=g, dtype=torch.float64)
        w = torch.randn(self.channels * self.m, 1, *self.kernel, generator=g,
                        dtype=torch.float64)
        b = torch.randn(self.channels * self.m, generator=g, dtype=torch.float64)
        out = [t.to(device, dtype).requires_grad_(requires_grad) for t in (x, w, b)]
        return out[0], out[1], out[2] if self.bias else None


def _conv2d_opinfo():
    from torch.testing._internal.common_methods_invocations import op_db
    return next(op for op in op_db if op.name == "nn.functional.conv2d")


def opinfo_cases(multipliers=(1, 2)):
    """PyTorch's OpInfo samples for nn.functional.conv2d (batched and unbatched), each made
    depthwise: the sample's input, kernel size, bias and stride/padding/dilation, with a
    (C*m, 1, kh, kw) weight for every multiplier m."""
    cases = []
    for s in _conv2d_opinfo().sample_inputs("cpu", torch.float64):
        kwargs = {k: v for k, v in s.kwargs.items() if k != "groups"}
        for m in multipliers:
            case = Case(tuple(s.input.shape), tuple(s.args[0].shape[2:]), m,
                        s.args[1] is not None, tuple(sorted(kwargs.items())))
            if case not in cases:
                cases.append(case)
    return cases


@dataclasses.dataclass
class ErrorCase:
    """An OpInfo error input made depthwise: the call, and what F.conv2d raises for it."""
    args: tuple
    kwargs: dict
    expected: type
    culprit: Optional[str]  # the argument the error is about, where the sample says

    def __str__(self):
        shapes = [tuple(a.shape) if isinstance(a, torch.Tensor) else a for a in self.args]
        return f"{shapes}_{self.kwargs}"


def error_cases():
    """PyTorch's OpInfo error inputs for nn.functional.conv2d that concern a depthwise call,
    made depthwise (weight (C, 1, kh, kw) in the sample's dtype, bias of C elements). The ones
    about ``groups`` are left out: the functional API has no such argument. ``expected`` is
    the type F.conv2d raises for the depthwise call."""
    out = []
    for e in _conv2d_opinfo().error_inputs("cpu"):
        s = e.sample_input
        if "groups" in s.kwargs:
            continue
        x, w, b = s.input, s.args[0], s.args[1]
        c = x.shape[-3]
        if w.dim() == 4:
            w = torch.ones(c, 1, *w.shape[2:], dtype=w.dtype)
        if b is not None:
            b = torch.ones(c, dtype=b.dtype)
        expected = _raises(x, w, b, s.kwargs)
        if expected is None:
            raise AssertionError(f"OpInfo error input {s} is accepted by F.conv2d once depthwise")
        # the keyword argument PyTorch's expected message is about, if any
        culprit = next((k for k in s.kwargs if k in e.error_regex), None)
        out.append(ErrorCase((x, w, b), dict(s.kwargs), expected, culprit))
    return out


def _raises(x, w, b, kwargs) -> Optional[type]:
    """The exception type F.conv2d raises for this depthwise call, or None."""
    try:
        reference(x, w, b, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the type is what is recorded
        return type(exc)
    return None


# ---- comparisons --------------------------------------------------------------------------

def assert_same_layout(got: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Same shape and the same strides on every dimension of size > 1 (the strides of size-1
    dimensions are arbitrary: PyTorch itself differs there between dtypes), hence the same
    memory layout and the same answers to is_contiguous(memory_format=...)."""
    assert got.shape == expected.shape, f"{what}: shape {tuple(got.shape)} != {tuple(expected.shape)}"
    strides = [(g, e) for g, e, n in zip(got.stride(), expected.stride(), got.shape) if n > 1]
    assert all(g == e for g, e in strides), (
        f"{what}: strides {got.stride()} but PyTorch gives {expected.stride()} "
        f"(shape {tuple(got.shape)})")


def _categories(t: torch.Tensor) -> torch.Tensor:
    """0 finite, 1 NaN, 2 +Inf, 3 -Inf."""
    t = t.detach().double().cpu()
    return (t.isnan() * 1 + t.isposinf() * 2 + t.isneginf() * 3).to(torch.int8)


def assert_same_nonfinite(got, expected, what: str) -> None:
    """NaN, +Inf and -Inf in exactly the same positions (equal_nan in spirit, and the sign of
    every infinity too)."""
    cg, ce = _categories(got), _categories(expected)
    if not torch.equal(cg, ce):
        idx = tuple(int(i) for i in torch.nonzero(cg != ce)[0])
        names = ["finite", "NaN", "+Inf", "-Inf"]
        raise AssertionError(
            f"{what}: {int((cg != ce).sum())} elements differ in finiteness; first at {idx}: "
            f"got {names[cg[idx]]} ({got[idx].item()!r}), PyTorch {names[ce[idx]]}")


def _grads(fn, x, w, b, grad_output):
    out = fn(x, w, b)
    inputs = [t for t in (x, w, b) if t is not None]
    grads = torch.autograd.grad(out, inputs, grad_output)
    return out, grads + ((None,) if b is None else ())


def _leaves(tensors, dtype=None):
    return [None if t is None else t.detach().to(dtype or t.dtype).requires_grad_()
            for t in tensors]


# ---- checks -------------------------------------------------------------------------------

def check_values(impl: Impl, case: Case, dtype: torch.dtype, device="cpu",
                 grad_output_layout=torch.contiguous_format) -> None:
    """Output and the input/weight/bias gradients equal F.conv2d's in float64 (per-dtype
    tolerance), with F.conv2d's layouts in ``dtype``; where F.conv2d raises, impl raises an
    exception of the same type."""
    x, w, b = case.make(dtype, device)
    kwargs = case.kwargs
    try:
        ref_out = reference(x, w, b, **kwargs)
    except Exception as exc:  # noqa: BLE001
        assert_raises_like(impl, (x, w, b), kwargs, type(exc), f"{case} {dtype}")
        return
    g = torch.randn(ref_out.shape, generator=torch.Generator().manual_seed(7),
                    dtype=torch.float64).to(device, dtype).contiguous(
                        memory_format=grad_output_layout if ref_out.dim() == 4
                        else torch.contiguous_format)
    out, grads = _grads(lambda *t: impl(*t, **kwargs), *_leaves((x, w, b)), g)
    out64, grads64 = _grads(lambda *t: reference(*t, **kwargs), *_leaves((x, w, b), torch.float64),
                            g.double())
    same_dtype_out, same_dtype_grads = _grads(lambda *t: reference(*t, **kwargs),
                                              *_leaves((x, w, b)), g)
    what = f"{case} {dtype}"
    assert out.dtype == dtype, f"{what}: output dtype {out.dtype}"
    assert_close_to_reference(out, out64, dtype, f"{what} output")
    assert_same_layout(out, same_dtype_out, f"{what} output")
    for name, got, exp, exp_dtype in zip(("grad_input", "grad_weight", "grad_bias"), grads,
                                         grads64, same_dtype_grads):
        if exp is None:
            assert got is None, f"{what}: {name} should be None"
            continue
        assert_close_to_reference(got, exp, dtype, f"{what} {name}")
        assert_same_layout(got, exp_dtype, f"{what} {name}")


def assert_raises_like(impl: Impl, args, kwargs, expected: type, what: str,
                       culprit: Optional[str] = None) -> None:
    """impl(*args, **kwargs) raises an instance of ``expected`` (what F.conv2d raises) whose
    message starts with 'fastdw:' and names ``culprit`` (or, if None, some argument)."""
    try:
        impl(*args, **kwargs)
    except expected as exc:
        message = str(exc)
        names = [culprit] if culprit else ["input", "weight", "bias", "stride", "padding",
                                           "dilation"]
        assert any(n in message for n in names), (
            f"{what}: message does not name {' or '.join(names)}: {message}")
        return
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(f"{what}: raised {type(exc).__name__} ({exc}), but F.conv2d raises "
                             f"{expected.__name__}; code catching that would miss it") from exc
    raise AssertionError(f"{what}: no exception, but F.conv2d raises {expected.__name__}")


def check_gradcheck(impl: Impl, case: Case, device="cpu", batched=True) -> None:
    """float64 gradcheck of impl with reverse and forward mode (and, if ``batched``, vmap over
    both), and gradgradcheck: the derivatives impl's autograd reports are the true ones."""
    kwargs = case.kwargs
    inputs = tuple(t for t in case.make(torch.float64, device, requires_grad=True)
                   if t is not None)

    def fn(x, w, b=None):
        return impl(x, w, b, **kwargs)
    with _no_batched_fallback(str(case)):
        torch.autograd.gradcheck(fn, inputs, check_forward_ad=True, check_backward_ad=True,
                                 check_batched_grad=batched, check_batched_forward_grad=batched,
                                 fast_mode=True)
        torch.autograd.gradgradcheck(fn, inputs, check_fwd_over_rev=True,
                                     check_batched_grad=batched, fast_mode=True)


def check_forward_ad(impl: Impl, case: Case, device="cpu") -> None:
    """Tangents of the output for tangents on the input, weight and bias (each alone and all
    at once), through torch.autograd.forward_ad, equal F.conv2d's (float64)."""
    kwargs = case.kwargs
    primals = case.make(torch.float64, device)
    tangents = case.make(torch.float64, device)  # same generator: reseed for variety
    tangents = [None if t is None else t.flip(-1) + 0.5 for t in tangents]
    names = ("input", "weight", "bias")
    choices = [(i,) for i in range(3) if primals[i] is not None] + [tuple(
        i for i in range(3) if primals[i] is not None)]
    for which in choices:
        results = []
        for fn in (impl, reference):
            with fwAD.dual_level():
                duals = [fwAD.make_dual(p, t) if i in which else p
                         for i, (p, t) in enumerate(zip(primals, tangents))]
                out = fn(*duals, **kwargs)
                primal, tangent = fwAD.unpack_dual(out)
                assert tangent is not None, f"{case}: no tangent for {[names[i] for i in which]}"
                results.append((primal.clone(), tangent.clone()))
        what = f"{case} tangent wrt {'+'.join(names[i] for i in which)}"
        assert_close_to_reference(results[0][0], results[1][0], torch.float64, what + " (primal)")
        assert_close_to_reference(results[0][1], results[1][1], torch.float64, what)


class _no_batched_fallback(warnings.catch_warnings):
    """Turns vmap's per-sample fallback warning into an error: a vmap must be one batched
    call."""

    def __init__(self, what):
        super().__init__()
        self.what = what

    def __enter__(self):
        out = super().__enter__()
        warnings.filterwarnings("error", message=".*(BatchedFallback|performance drop).*")
        return out


def check_func(impl: Impl, case: Case, device="cpu") -> None:
    """torch.func: grad, vjp, jvp, jacrev, jacfwd, hessian and vmap (over the batch, over stacked
    weights, over both, and with the vmapped dimension elsewhere) match F.conv2d, in float64,
    with no per-sample vmap fallback."""
    from torch import func
    kwargs = case.kwargs
    x, w, b = case.make(torch.float64, device)
    args = (x, w) if b is None else (x, w, b)
    argnums = tuple(range(len(args)))

    def loss(fn):
        return lambda *a: (fn(*a, **kwargs) ** 2).sum()

    def close(got, exp, what):
        for i, (gt, ex) in enumerate(zip(torch.utils._pytree.tree_leaves(got),
                                         torch.utils._pytree.tree_leaves(exp))):
            assert_close_to_reference(gt, ex, torch.float64, f"{case} {what}[{i}]")

    with _no_batched_fallback(str(case)):
        for name, transform in (
                ("grad", lambda f: func.grad(loss(f), argnums=argnums)(*args)),
                ("vjp", lambda f: func.vjp(lambda *a: f(*a, **kwargs), *args)[1](
                    torch.ones_like(reference(*args, **kwargs)))),
                ("jvp", lambda f: func.jvp(lambda *a: f(*a, **kwargs), args,
                                           tuple(torch.ones_like(a) for a in args))),
                ("jacrev", lambda f: func.jacrev(lambda *a: f(*a, **kwargs), argnums)(*args)),
                ("jacfwd", lambda f: func.jacfwd(lambda *a: f(*a, **kwargs), argnums)(*args)),
                ("hessian(weight)", lambda f: func.hessian(
                    lambda wt: loss(f)(x, wt, *args[2:]))(w)),
                ("grad(grad) input-weight", lambda f: func.jacrev(func.grad(
                    loss(f), argnums=0), argnums=1)(*args))):
            close(transform(impl), transform(reference), name)
        stack = torch.stack([x, x.flip(-1) * 0.5, x + 1.0])
        w_stack = torch.stack([w, w * -2.0, w.flip(-2)])
        for name, in_dims, vargs in (
                ("vmap(batch)", (0, None), (stack, w)),
                ("vmap(weights)", (None, 0), (x, w_stack)),
                ("vmap(both)", (0, 0), (stack, w_stack)),
                ("vmap(batch at dim 2)", (2, None), (stack.movedim(0, 2), w)),
                ("vmap(weights at dim 1)", (None, 1), (x, w_stack.movedim(0, 1)))):
            close(func.vmap(lambda *a: impl(*a, *args[2:], **kwargs), in_dims)(*vargs),
                  func.vmap(lambda *a: reference(*a, *args[2:], **kwargs), in_dims)(*vargs),
                  name)
        per_sample = func.vmap(func.grad(lambda xi, wt: loss(impl)(xi[None], wt, *args[2:]),
                                         argnums=1), (0, None))
        per_sample_ref = func.vmap(func.grad(
            lambda xi, wt: loss(reference)(xi[None], wt, *args[2:]), argnums=1), (0, None))
        if x.dim() == 4:
            close(per_sample(x, w), per_sample_ref(x, w), "vmap(grad) per-sample weight grads")


def layout_matrix(impl: Impl, input_shape, weight_shape, dtype=torch.float32, device="cpu",
                  **kwargs) -> None:
    """All 8 combinations of input / weight / grad_output layouts (NCHW or channels_last, made
    with ``.to(memory_format=...)``): output, grad_input and grad_weight have PyTorch's strides,
    and values within fastdw.accuracy's bound of float64 from the same rounded tensors."""
    g = torch.Generator().manual_seed(zlib.crc32(repr((input_shape, weight_shape)).encode()))
    x0 = torch.randn(input_shape, generator=g, dtype=torch.float64).to(device, dtype)
    w0 = torch.randn(weight_shape, generator=g, dtype=torch.float64).to(device, dtype)
    for x_cl, w_cl, g_cl in itertools.product((False, True), repeat=3):
        x = x0.to(memory_format=CL) if x_cl else x0
        w = w0.to(memory_format=CL) if w_cl else w0
        ref = reference(x, w, None, **kwargs)
        grad = torch.randn(ref.shape, generator=g, dtype=torch.float64).to(device, dtype)
        grad = grad.to(memory_format=CL) if g_cl else grad
        what = (f"x{tuple(input_shape)} w{tuple(weight_shape)} {kwargs} {dtype} layouts "
                f"input={'CL' if x_cl else 'NCHW'} weight={'CL' if w_cl else 'NCHW'} "
                f"grad_output={'CL' if g_cl else 'NCHW'}")
        out, grads = _grads(lambda a, b_, c: impl(a, b_, c, **kwargs), *_leaves((x, w, None)),
                            grad)
        # PyTorch in the dtype gives the layouts; the values are checked against float64 from
        # the same rounded tensors (PyTorch's own bfloat16 backward-input accumulates in
        # bfloat16 on CPUs without oneDNN's bfloat16 path: no reference there).
        ref, ref_grads = _grads(lambda a, b_, c: reference(a, b_, c, **kwargs),
                                *_leaves((x, w, None)), grad)
        ref64, ref64_grads = _grads(lambda a, b_, c: reference(a, b_, c, **kwargs),
                                    *_leaves((x, w, None), torch.float64), grad.double())
        for name, got, exp, exp64 in (
                ("output", out, ref, ref64), ("grad_input", grads[0], ref_grads[0], ref64_grads[0]),
                ("grad_weight", grads[1], ref_grads[1], ref64_grads[1])):
            assert_same_layout(got, exp, f"{what}: {name}")
            assert_close_to_reference(got, exp64, dtype, f"{what}: {name}")


# ---- non-finite values --------------------------------------------------------------------

def skip_padding_reference(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """F.conv2d's value where padded taps are left out rather than multiplied by zero, built
    from PyTorch ops and differentiable (its gradients follow the same rule): what PyTorch's
    oneDNN path computes, also for NaN or Inf weights and gradients (see
    tests/test_parity_nonfinite.py for the anchor), and what fastdw promises on every path.
    ``stride``, ``padding``, ``dilation``: ints or pairs."""
    def two(v):
        return (v, v) if isinstance(v, int) else tuple(v)
    (sh, sw), (ph, pw), (dh, dw) = two(stride), two(padding), two(dilation)
    n, c, h, w_ = input.shape
    cout, _, kh, kw = weight.shape
    xp = F.pad(input.repeat_interleave(cout // c, 1), (pw, pw, ph, ph))
    inside = F.pad(torch.ones(1, 1, h, w_, dtype=torch.bool, device=input.device),
                   (pw, pw, ph, ph))
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w_ + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = torch.zeros(n, cout, oh, ow, dtype=input.dtype, device=input.device)
    for i, j in itertools.product(range(kh), range(kw)):
        rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
        cols = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
        tap = xp[:, :, rows, cols] * weight[:, 0, i, j].view(1, cout, 1, 1)
        out = out + torch.where(inside[:, :, rows, cols], tap, torch.zeros((), dtype=tap.dtype))
    return out if bias is None else out + bias.view(1, cout, 1, 1)


def check_nonfinite(impl: Impl, case: Case, dtype: torch.dtype, where: str, layout,
                    device="cpu") -> None:
    """NaN, +Inf and -Inf planted in ``where`` ('input', 'weight' or 'grad_output'): the output
    and every gradient are non-finite exactly where ``skip_padding_reference`` (float64) puts
    them, and finite values agree within the dtype's tolerance."""
    x, w, b = case.make(dtype, device)
    kwargs = case.kwargs
    ref_shape = reference(x.double(), w.double(), None, **kwargs).shape
    g = torch.randn(ref_shape, generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64).to(device, dtype)
    target = dict(input=x, weight=w, grad_output=g)[where]
    flat = target.view(-1)
    for i, v in zip((0, flat.numel() // 3, flat.numel() // 2, -1),
                    (float("inf"), float("nan"), -float("inf"), float("inf"))):
        flat[i] = v
    x, g = x.contiguous(memory_format=layout), g.contiguous(memory_format=layout)
    out, grads = _grads(lambda *t: impl(*t, **kwargs), *_leaves((x, w, b)), g)
    ref, ref_grads = _grads(lambda *t: skip_padding_reference(*t, **kwargs),
                            *_leaves((x, w, b), torch.float64), g.double())
    what = f"{case} {dtype} {layout} non-finite {where}"
    for name, got, exp in zip(("output", "grad_input", "grad_weight", "grad_bias"),
                              (out,) + tuple(grads), (ref,) + tuple(ref_grads)):
        if exp is None:
            continue
        assert_same_nonfinite(got, exp, f"{what}: {name}")
        finite = _categories(exp) == 0
        assert_close_to_reference(torch.where(finite, got.detach().double(), 0.0),
                                  torch.where(finite, exp.detach(), 0.0), dtype,
                                  f"{what}: {name} (finite part)")


# The NaN/Inf cases (tests/test_parity_nonfinite.py and its per-ISA child processes).
NONFINITE_CASES = dict(
    p1=Case((2, 3, 5, 6), (3, 3), conv=(("padding", 1),)),
    stride2_16_channels=Case((2, 16, 9, 9), (3, 3), conv=(("padding", 1), ("stride", 2))),
    k5x5=Case((1, 4, 7, 8), (5, 5), conv=(("padding", 2),)),
    multiplier2_dilation=Case((2, 2, 6, 7), (3, 3), m=2,
                              conv=(("padding", (2, 1)), ("dilation", (1, 2)))),
    ring_and_in_place_sizes=Case((8, 16, 14, 14), (3, 3), bias=False, conv=(("padding", 1),)),
)
LAYOUTS = [torch.contiguous_format, torch.channels_last]
# FASTDW_CPU_BLOCKED (read on every call): auto, off, the ring kernels, the in-place NHWC kernel
CPU_ROUTES = ["", "0", "1", "direct"]

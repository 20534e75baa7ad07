"""Hardening (issue 8): zero-size and non-finite inputs against F.conv2d's behaviour,
crash-prone raw-op calls in a child interpreter, determinism across runs and thread counts,
memory growth, and concurrent Python threads.

Tests whose docstring says "BUG" pinned a defect in the library when they were written; the
repro is in the docstring.
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading

import pytest
import torch
import torch.nn.functional as F

import fastdw
from fastdw import accuracy
from tests.support.reference_check import assert_matches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
X = torch.randn(2, 4, 8, 8)
W = torch.randn(4, 1, 3, 3)
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
LAYOUTS = ["nchw", "channels_last"]


def _layout(t, layout):
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else t


def _conv_ref(x, w, b=None, stride=1, padding=0, dilation=1):
    return F.conv2d(x, w, b, stride, padding, dilation, x.shape[-3])


def _fwd_and_grads(fn, x, w, b, g, **conv):
    """Output and (grad_input, grad_weight, grad_bias) of fn for grad_output g."""
    x = x.detach().requires_grad_()
    w = w.detach().requires_grad_()
    b = None if b is None else b.detach().requires_grad_()
    out = fn(x, w, b, **conv)
    inputs = (x, w) if b is None else (x, w, b)
    grads = torch.autograd.grad(out, inputs, g.to(out.dtype))
    return out.detach(), grads


# ---- PyTorch's own behaviour: results -------------------------------------------------------

def _assert_matches_conv2d(x, w, b, **conv):
    """fastdw vs float64 F.conv2d under fastdw.accuracy's bound: output and all gradients, for
    the same grad_output."""
    ref_out = _conv_ref(x.double(), w.double(), None if b is None else b.double(), **conv)
    g = torch.randn(ref_out.shape, dtype=torch.float64).to(x.dtype)
    expected = accuracy.expected(lambda *t: _conv_ref(*t, **conv), [x, w, b], g)
    out, grads = _fwd_and_grads(fastdw.depthwise_conv2d, x, w, b, g, **conv)
    assert out.dtype == x.dtype
    for name, got, exp in zip(("output", "grad_input", "grad_weight", "grad_bias"),
                              (out, *grads), expected):
        assert_matches(got, exp, x.dtype, name)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("conv", [dict(padding=1), dict(stride=2, padding=(0, 2), dilation=2),
                                  dict(padding="same"), dict(padding=(4, 0), stride=(3, 1))],
                         ids=["p1", "s2d2", "same", "p4s3"])
def test_zero_batch_matches_conv2d(conv, dtype, layout):
    """N=0 gives F.conv2d's (empty) output and zero weight/bias gradients, in every dtype."""
    x = _layout(torch.randn(0, 3, 7, 6, dtype=dtype), layout)
    w = torch.randn(6, 1, 3, 3, dtype=dtype)
    b = torch.randn(6, dtype=dtype)
    ref = _conv_ref(x.double(), w.double(), b.double(), **conv)
    out, (gx, gw, gb) = _fwd_and_grads(fastdw.depthwise_conv2d, x, w, b,
                                       torch.randn(ref.shape, dtype=torch.float64), **conv)
    assert out.shape == ref.shape and out.dtype == dtype
    assert gx.shape == x.shape and gx.dtype == dtype
    assert torch.equal(gw, torch.zeros_like(w)) and torch.equal(gb, torch.zeros_like(b))


def _outcome(fn):
    try:
        out = fn()
    except (ValueError, TypeError, RuntimeError) as e:
        return "error", str(e).splitlines()[0]
    return "result", tuple(out.shape)


@pytest.mark.parametrize("n,c,h,w,padding", [
    (1, 2, 0, 8, 2), (2, 2, 8, 0, 2), (1, 2, 0, 0, 3), (1, 2, 0, 8, 1), (1, 2, 0, 8, 0),
    (0, 2, 0, 8, 2), (0, 2, 0, 0, 2), (0, 2, 8, 0, 0), (1, 0, 8, 8, 1), (0, 0, 8, 8, 1),
])
def test_zero_size_dimensions_match_conv2d(n, c, h, w, padding):
    """H=0 / W=0 / C=0: fastdw raises exactly when F.conv2d raises, else gives its shape.

    BUG (when written): with N > 0 and an empty H or W that the padding alone covers, F.conv2d
    raises "Only zero batch or zero channel inputs are supported" but fastdw returns a
    bias-filled output. Repro:
        fastdw.depthwise_conv2d(torch.randn(1, 2, 0, 8), torch.randn(2, 1, 3, 3), padding=2)
        -> shape (1, 2, 2, 10); F.conv2d(..., groups=2) -> RuntimeError
    """
    x = torch.randn(n, c, h, w)
    wt = torch.randn(max(c, 1) * 2 if c else 0, 1, 3, 3)
    b = torch.randn(wt.shape[0])
    ref = _outcome(lambda: F.conv2d(x, wt, b, 1, padding, 1, c))
    got = _outcome(lambda: fastdw.depthwise_conv2d(x, wt, b, 1, padding))
    assert got[0] == ref[0], f"F.conv2d: {ref}, fastdw: {got}"
    if ref[0] == "result":
        assert got[1] == ref[1]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("stride", [2**31, 2**40, (1, 2**40), (2**40, 1), (5, 2**33)],
                         ids=["2^31", "2^40", "1,2^40", "2^40,1", "5,2^33"])
def test_huge_stride_matches_conv2d(stride, layout):
    """A stride far beyond the input: one output row/column, as F.conv2d computes.

    BUG (when written): NCHW forward/backward (and NHWC backward-input) allocate a padded plane
    buffer of about rows * stride_w * 17 elements, so a huge stride_w throws std::bad_alloc
    (MemoryError) instead of computing a 1-column output. Repro:
        fastdw.depthwise_conv2d(torch.randn(2, 4, 8, 8), torch.randn(4, 1, 3, 3), None,
                                stride=(1, 2**40), padding=1)  -> MemoryError: std::bad_alloc
    """
    x = _layout(torch.randn(2, 4, 8, 9, dtype=torch.float64), layout)
    w = torch.randn(8, 1, 3, 3, dtype=torch.float64)
    b = torch.randn(8, dtype=torch.float64)
    _assert_matches_conv2d(x, w, b, stride=stride, padding=1)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("conv", [dict(padding=20), dict(padding=(9, 30), stride=(4, 7)),
                                  dict(padding=(6, 5), dilation=(3, 2), stride=2)],
                         ids=["p20", "p9x30_s4x7", "p6x5_d3x2_s2"])
def test_padding_far_beyond_input_matches_conv2d(conv, layout):
    """Padding much larger than the input (most outputs see only zeros: bias, zero grads)."""
    x = _layout(torch.randn(2, 3, 3, 4, dtype=torch.float64), layout)
    w = torch.randn(6, 1, 3, 5, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)
    _assert_matches_conv2d(x, w, b, **conv)


@pytest.mark.parametrize("kind", ["expanded_batch", "expanded_weight", "overlapping_windows",
                                  "storage_offset", "broadcast_bias"])
def test_aliased_and_offset_tensors(kind):
    """Zero strides, overlapping memory and storage offsets are read correctly."""
    x = torch.randn(3, 4, 7, 9, dtype=torch.float64)
    w = torch.randn(8, 1, 3, 3, dtype=torch.float64)
    b = torch.randn(8, dtype=torch.float64)
    if kind == "expanded_batch":
        x = x[:1].expand(3, 4, 7, 9)
    elif kind == "expanded_weight":
        w = w[:1].expand(8, 1, 3, 3)
    elif kind == "overlapping_windows":
        base = torch.randn(400, dtype=torch.float64)
        x = base.as_strided((3, 4, 7, 9), (5, 3, 9, 1))  # elements alias each other
    elif kind == "storage_offset":
        x = torch.randn(5000, dtype=torch.float64)[123:123 + 3 * 4 * 7 * 9].view(3, 4, 7, 9)
    elif kind == "broadcast_bias":
        b = torch.tensor(0.5, dtype=torch.float64).expand(8)
    ref = _conv_ref(x, w, b, padding=1)
    torch.testing.assert_close(fastdw.depthwise_conv2d(x, w, b, padding=1), ref)


def test_all_meta_tensors_infer_shape_like_conv2d():
    """Meta tensors everywhere: F.conv2d's output shape and dtype, and the memory format the CPU
    kernel gives for the same input (F.conv2d's own meta kernel returns NCHW for a
    channels_last input, unlike its CPU kernel, so it is not the reference for strides)."""
    for layout in LAYOUTS:
        cpu_x = _layout(torch.randn(2, 4, 9, 7, dtype=torch.bfloat16), layout)
        cpu_w = torch.randn(8, 1, 3, 2, dtype=torch.bfloat16)
        args = (None, (2, 1), (1, 0), (1, 2))
        out = fastdw.depthwise_conv2d(cpu_x.to("meta"), cpu_w.to("meta"), *args)
        ref = F.conv2d(cpu_x.to("meta"), cpu_w.to("meta"), *args, 4)
        real = fastdw.depthwise_conv2d(cpu_x, cpu_w, *args)
        assert out.device.type == "meta" and out.shape == ref.shape and out.dtype == ref.dtype
        assert out.stride() == real.stride(), layout


# ---- non-finite values: propagated like F.conv2d --------------------------------------------

def _masks(t):
    t = t.detach().double()
    return torch.stack([t.isnan(), t.isposinf(), t.isneginf()])


def _assert_same_nonfinite(got, ref, what):
    gm, rm = _masks(got), _masks(ref)
    if not torch.equal(gm, rm):
        names = ["NaN", "+Inf", "-Inf"]
        diffs = {names[i]: (int(gm[i].sum()), int(rm[i].sum())) for i in range(3)
                 if not torch.equal(gm[i], rm[i])}
        idx = tuple(int(v) for v in torch.nonzero((gm != rm).any(0))[0])
        raise AssertionError(f"{what}: non-finite positions differ from F.conv2d (fastdw count, "
                             f"reference count) {diffs}; first at {idx}: got "
                             f"{got.flatten()[0] if got.dim() == 0 else got[idx].item()}, "
                             f"expected {ref[idx].item()}")


_NONFINITE_CONVS = [dict(padding=1), dict(stride=2, padding=(2, 1), dilation=(1, 2)),
                    dict(padding=0)]


def _nonfinite_tensors(dtype, layout, where, conv):
    """x, w, b, grad_output in ``dtype`` with a NaN, a +Inf and a -Inf planted in ``where``."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 7, 8, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 1, 3, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    ref_shape = _conv_ref(x, w, None, **conv).shape
    g = torch.randn(ref_shape, generator=gen, dtype=torch.float64)
    flat = dict(input=x, weight=w, grad=g)[where].view(-1)
    flat[3] = float("nan")
    flat[flat.numel() // 2] = float("inf")
    flat[-1] = -float("inf")
    x, w, b, g = (t.to(dtype) for t in (x, w, b, g))
    return _layout(x, layout), w, b, _layout(g, layout)


def _nonfinite_case(dtype, layout, where, conv):
    x, w, b, g = _nonfinite_tensors(dtype, layout, where, conv)
    ref = _fwd_and_grads(_conv_ref, x.double(), w.double(), b.double(), g.double(), **conv)
    got = _fwd_and_grads(fastdw.depthwise_conv2d, x, w, b, g, **conv)
    return got, ref


@pytest.mark.parametrize("conv", _NONFINITE_CONVS, ids=["p1", "s2p2d2", "p0"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nonfinite_input_propagates_like_conv2d(dtype, layout, conv):
    """NaN/+Inf/-Inf in the input land in exactly the output and gradient positions where the
    float64 F.conv2d puts them."""
    (out, grads), (ref, ref_grads) = _nonfinite_case(dtype, layout, "input", conv)
    _assert_same_nonfinite(out, ref, "output")
    for name, a, r in zip(("grad_input", "grad_weight", "grad_bias"), grads, ref_grads):
        _assert_same_nonfinite(a, r, name)


def _category(t):
    """0 finite, 1 NaN, 2 +Inf, 3 -Inf."""
    t = t.detach().double()
    return (t.isnan() * 1 + t.isposinf() * 2 + t.isneginf() * 3).to(torch.int8)


def _skip_padding_reference(x, w, b, g, stride, padding, dilation):
    """Output and grad_weight in float64 with out-of-bounds taps *skipped* instead of multiplied
    by the zero padding (what PyTorch's own mkldnn path does for float32 channels_last: a NaN or
    Inf weight then does not poison border outputs)."""
    x, w, b, g = (t.detach().double() for t in (x, w, b, g))
    n, c, h, wd = x.shape
    cout, _, kh, kw = w.shape
    m = cout // c
    unfold = dict(kernel_size=(kh, kw), dilation=dilation, padding=padding, stride=stride)
    cols = F.unfold(x, **unfold).view(n, c, 1, kh * kw, -1)
    valid = F.unfold(torch.ones(1, c, h, wd, dtype=torch.float64), **unfold) > 0
    valid = valid.view(1, c, 1, kh * kw, -1)
    zero = torch.zeros((), dtype=torch.float64)
    out = torch.where(valid, w.view(1, c, m, kh * kw, 1) * cols, zero).sum(3)
    out = (out + b.view(1, c, m, 1)).view(n, cout, *g.shape[2:])
    gw = torch.where(valid, g.reshape(n, c, m, 1, -1) * cols, zero).sum((0, 4))
    return out, gw.reshape(w.shape)


def _assert_nonfinite_one_of(got, skip, full, what):
    """Each element is finite / NaN / +Inf / -Inf exactly as one of the two semantics says."""
    cg, cs, cf = _category(got), _category(skip), _category(full)
    bad = (cg != cs) & (cg != cf)
    if bad.any():
        idx = tuple(int(v) for v in torch.nonzero(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} elements non-finite where neither F.conv2d (zero padding "
            f"times every tap) nor a skip-the-padding convolution puts a non-finite value, or "
            f"finite where both do; first at {idx}: got {got[idx].item()}, F.conv2d "
            f"{full[idx].item()}, skip-padding {skip[idx].item()}")


@pytest.mark.parametrize("conv", _NONFINITE_CONVS, ids=["p1", "s2p2d2", "p0"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("where", ["weight", "grad_output"])
def test_nonfinite_weight_or_grad_output_propagate_like_conv2d(where, dtype, layout, conv):
    """NaN/Inf in the weight or in grad_output.

    PyTorch itself is not consistent at the zero padding: the float64 F.conv2d multiplies the
    padding by every tap (0 * Inf = NaN at border outputs and in every tap's grad_weight),
    while its float32 channels_last (mkldnn) path skips padded taps. So for the output and
    grad_weight either semantics is accepted, element by element. grad_input and grad_bias
    have only one meaning (the sum over the taps that connect to a real output) and must match
    F.conv2d exactly.

    BUG (when written): the NCHW backward-input makes grad_input NaN at inputs that the NaN
    tap never connects to any output, even with padding=0. Repro:
        x = torch.randn(1, 2, 4, 4, requires_grad=True); w = torch.randn(2, 1, 3, 3)
        w[0, 0, 0, 0] = float('nan')
        fastdw.depthwise_conv2d(x, w, padding=0).backward(torch.randn(1, 2, 2, 2))
        x.grad.isnan().sum()  -> 16   (F.conv2d, any dtype: 4)
    """
    (out, grads), (ref, ref_grads) = _nonfinite_case(
        dtype, layout, "weight" if where == "weight" else "grad", conv)
    x, w, b, g = _nonfinite_tensors(dtype, layout, "weight" if where == "weight" else "grad",
                                    conv)
    skip_out, skip_gw = _skip_padding_reference(x, w, b, g, **{
        k: conv.get(k, d) for k, d in (("stride", 1), ("padding", 0), ("dilation", 1))})
    _assert_nonfinite_one_of(out, skip_out, ref, "output")
    _assert_same_nonfinite(grads[0], ref_grads[0], "grad_input")
    _assert_nonfinite_one_of(grads[1], skip_gw, ref_grads[1], "grad_weight")
    _assert_same_nonfinite(grads[2], ref_grads[2], "grad_bias")


# ---- crash-prone raw-op calls, in a child interpreter ---------------------------------------

_RAW_PRELUDE = """
import json, sys, torch, fastdw
ops = torch.ops.fastdw
torch.manual_seed(0)
X = torch.randn(2, 4, 8, 8); W = torch.randn(4, 1, 3, 3); G = torch.randn(2, 4, 8, 8)
S, P, D = [1, 1], [1, 1], [1, 1]
bi, bw, fw = ops.depthwise_conv2d_backward_input, ops.depthwise_conv2d_backward_weight, \\
    ops.depthwise_conv2d
for name, code in json.load(sys.stdin):
    print("BEGIN", name, flush=True)
    try:
        r = eval(code)
        r = r if isinstance(r, tuple) else (r,)
        outcome = "returned " + ", ".join(f"{t.device.type}{tuple(t.shape)}" for t in r)
    except Exception as e:
        outcome = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    print("RESULT", json.dumps([name, outcome]), flush=True)
"""

# Every one of these must raise ValueError/TypeError/RuntimeError, never kill the process.
RAW_BAD_CALLS = {
    # backward_input: input_size inconsistent with weight / grad_output
    "bwi input_size channels vs weight": "bi(G, W, [2, 3, 8, 8], S, P, D)",
    "bwi input_size batch vs grad": "bi(G, W, [3, 4, 8, 8], S, P, D)",
    "bwi input_size taller than grad": "bi(G, W, [2, 4, 12, 8], S, P, D)",
    "bwi input_size narrower than grad": "bi(G, W, [2, 4, 8, 3], S, P, D)",
    "bwi input_size 3 elements": "bi(G, W, [4, 8, 8], S, P, D)",
    "bwi input_size 5 elements": "bi(G, W, [1, 2, 4, 8, 8], S, P, D)",
    "bwi input_size negative H": "bi(G, W, [2, 4, -8, 8], S, P, D)",
    "bwi input_size negative N": "bi(G[:0], W, [-1, 4, 8, 8], S, P, D)",
    "bwi input_size 0 channels": "bi(G, W, [2, 0, 8, 8], S, P, D)",
    "bwi input_size 2**40 rows, stride 2**40": "bi(G[:, :, :1], W, [2, 4, 2**40, 8], "
                                               "[2**40, 1], P, D)",
    "bwi input_size numel overflows int64": "bi(G[:, :, :1, :1], W, [2, 4, 2**62, 2**62], "
                                            "[2**62, 2**62], P, D)",
    "bwi 3-D weight": "bi(G, W[:, 0], [2, 4, 8, 8], S, P, D)",
    "bwi weight dim1 = 2": "bi(G, torch.randn(4, 2, 3, 3), [2, 4, 8, 8], S, P, D)",
    "bwi weight multiplier vs grad": "bi(G, torch.randn(8, 1, 3, 3), [2, 4, 8, 8], S, P, D)",
    "bwi weight kernel larger than input": "bi(G, torch.randn(4, 1, 11, 11), [2, 4, 8, 8], "
                                           "S, P, D)",
    "bwi 3-D grad_output": "bi(G[0], W, [2, 4, 8, 8], S, P, D)",
    "bwi 5-D grad_output": "bi(G[None], W, [2, 4, 8, 8], S, P, D)",
    "bwi grad_output float64, weight float32": "bi(G.double(), W, [2, 4, 8, 8], S, P, D)",
    "bwi int grad_output and weight": "bi(G.int(), W.int(), [2, 4, 8, 8], S, P, D)",
    "bwi stride 0": "bi(G, W, [2, 4, 8, 8], [0, 1], P, D)",
    "bwi padding 1 element": "bi(G, W, [2, 4, 8, 8], S, [1], D)",
    # backward_weight: weight_size inconsistent with input / grad_output
    "bww weight_size channels vs grad": "bw(G, X, [8, 1, 3, 3], S, P, D)",
    "bww weight_size not a multiple of C": "bw(G, X, [6, 1, 3, 3], S, P, D)",
    "bww weight_size dim1 = 2": "bw(G, X, [4, 2, 3, 3], S, P, D)",
    "bww weight_size 3 elements": "bw(G, X, [4, 3, 3], S, P, D)",
    "bww weight_size negative kernel": "bw(G, X, [4, 1, -3, 3], S, P, D)",
    "bww weight_size zero kernel": "bw(G, X, [4, 1, 0, 3], S, P, D)",
    "bww weight_size kernel larger than input": "bw(G, X, [4, 1, 11, 3], S, P, D)",
    "bww weight_size huge kernel": "bw(G, X, [4, 1, 2**31, 2**31], S, [2**30, 2**30], D)",
    "bww grad_output spatial mismatch": "bw(torch.randn(2, 4, 7, 8), X, [4, 1, 3, 3], S, P, D)",
    "bww grad_output batch mismatch": "bw(torch.randn(3, 4, 8, 8), X, [4, 1, 3, 3], S, P, D)",
    "bww 3-D input": "bw(G, X[0], [4, 1, 3, 3], S, P, D)",
    "bww 0-D grad_output": "bw(torch.tensor(1.0), X, [4, 1, 3, 3], S, P, D)",
    "bww grad_output half, input float": "bw(G.half(), X, [4, 1, 3, 3], S, P, D)",
    "bww bool input": "bw(G, X.bool(), [4, 1, 3, 3], S, P, D)",
    "bww dilation 0": "bw(G, X, [4, 1, 3, 3], S, P, [1, 0])",
    # forward
    "fwd 2-D bias": "fw(X, W, torch.randn(4, 1), S, P, D)",
    "fwd bias too long": "fw(X, W, torch.randn(5), S, P, D)",
    "fwd bias float64": "fw(X, W, torch.randn(4).double(), S, P, D)",
    "fwd weight 0 output channels": "fw(X, torch.randn(0, 1, 3, 3), None, S, P, D)",
    "fwd 0 input channels": "fw(X[:, :0], torch.randn(0, 1, 3, 3), None, S, P, D)",
    "fwd 5-D input": "fw(X[None], W, None, S, P, D)",
    "fwd stride 3 elements": "fw(X, W, None, [1, 1, 1], P, D)",
    "fwd negative padding": "fw(X, W, None, S, [-1, 0], D)",
    "fwd negative stride": "fw(X, W, None, [1, -1], P, D)",
    "fwd padding 2**62 (int64 overflow)": "fw(X, W, None, S, [2**62, 0], D)",
    "fwd padding 2**61 (huge output)": "fw(X, W, None, S, [2**61, 0], D)",
    "fwd padding 2**40 both (huge output)": "fw(X, W, None, S, [2**40, 2**40], D)",
    # int64 overflow in the geometry: F.conv2d's own checks overflow here too, but these must
    # still raise rather than read out of bounds.
    "fwd dilation 2**63-1 (overflows dilation*(k-1))": "fw(X, W, None, S, [0, 0], [2**63 - 1, 1])",
    "fwd dilation 2**62+1, 5x5 kernel (wraps to 4)":
        "fw(X, torch.randn(4, 1, 5, 5), None, S, [0, 0], [2**62 + 1, 1])",
    "bww dilation 2**63-1": "bw(torch.randn(2, 4, 10, 6), X, [4, 1, 3, 3], S, [0, 0], "
                            "[2**63 - 1, 1])",
    "bwi dilation 2**63-1": "bi(torch.randn(2, 4, 10, 6), W, [2, 4, 8, 8], S, [0, 0], "
                            "[2**63 - 1, 1])",
    # meta/cpu mixes: the dispatcher routes them to the fake (meta) kernel
    "fwd cpu input, meta weight": "fw(X, W.to('meta'), None, S, P, D)",
    "bwi meta grad_output, cpu weight": "bi(G.to('meta'), W, [2, 4, 8, 8], S, P, D)",
    # the fake kernels themselves (what torch.compile traces with)
    "meta fwd stride 0": "fw(X.to('meta'), W.to('meta'), None, [0, 1], P, D)",
    "meta fwd dilation 1 element": "fw(X.to('meta'), W.to('meta'), None, S, P, [1])",
    "meta fwd weight for 3 channels": "fw(X.to('meta'), torch.randn(3, 1, 3, 3, device='meta'), "
                                      "None, S, P, D)",
}

# Known defects when these tests were written (see test_raw_bad_call's docstring).
_RAW_BUG_NOTES = {
    "fwd dilation 2**63-1 (overflows dilation*(k-1))":
        "int64 overflow in make_params: returns a (2, 4, 10, 6) output of garbage",
    "fwd dilation 2**62+1, 5x5 kernel (wraps to 4)": "int64 overflow in make_params",
    "bww dilation 2**63-1": "int64 overflow in make_params",
    "bwi dilation 2**63-1": "int64 overflow in make_params",
    "fwd cpu input, meta weight": "fake kernel runs: returns an uninitialised CPU tensor",
    "bwi meta grad_output, cpu weight": "fake kernel runs without device checks",
    "meta fwd stride 0": "fake kernel: ZeroDivisionError",
    "meta fwd dilation 1 element": "fake kernel: IndexError",
    "meta fwd weight for 3 channels": "fake kernel validates nothing: returns a shape",
}


@pytest.fixture(scope="module")
def raw_outcomes():
    """Runs RAW_BAD_CALLS in child interpreters: {name: outcome}. A child killed by a signal
    marks the call it was in as 'CRASH (signal N)', and a new child carries on after it."""
    pending = list(RAW_BAD_CALLS.items())
    outcomes = {}
    env = dict(os.environ, PYTHONPATH=ROOT)
    while pending:
        proc = subprocess.run([sys.executable, "-c", _RAW_PRELUDE], input=json.dumps(pending),
                              capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
        current = None
        for line in proc.stdout.splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "BEGIN":
                current = rest
            elif kind == "RESULT":
                name, outcome = json.loads(rest)
                outcomes[name] = outcome
                current = None
        if proc.returncode == 0:
            break
        if current is None:  # died outside any call: report on every remaining one
            for name, _ in pending:
                outcomes.setdefault(name, f"CHILD FAILED rc={proc.returncode}: "
                                          f"{proc.stderr[-500:]}")
            break
        outcomes[current] = f"CRASH (signal {-proc.returncode}): {proc.stderr[-300:]}"
        names = [n for n, _ in pending]
        pending = pending[names.index(current) + 1:]
    return outcomes


@pytest.mark.subprocess
@pytest.mark.parametrize("name", list(RAW_BAD_CALLS))
def test_raw_bad_call(name, raw_outcomes):
    """Each inconsistent raw torch.ops.fastdw call raises ValueError/TypeError/RuntimeError in a
    child interpreter, which exits normally; it never dies by a signal or returns a result.

    BUGs (when written), each reproducible with the call in RAW_BAD_CALLS:
      * int64 overflow: fw(X, W, None, [1,1], [0,0], [2**63-1, 1]) returns a (2, 4, 10, 6)
        tensor of garbage (values like 1e30 suggest reads outside the input) instead of
        raising; make_params computes dilation * (kernel - 1) without an overflow check.
        (F.conv2d has the same overflow.)
      * meta/cpu mixes reach the fake kernel: fw(X, W.to('meta'), ...) returns an
        uninitialised CPU tensor (F.conv2d behaves the same way).
      * the fake kernels validate nothing: on meta, stride 0 -> ZeroDivisionError, a
        1-element dilation -> IndexError, a weight for the wrong channel count -> a shape.
    """
    outcome = raw_outcomes.get(name, "not run")
    note = _RAW_BUG_NOTES.get(name, "")
    assert not outcome.startswith("CRASH"), f"{name}: {outcome}"
    assert outcome.split(":")[0] in ("ValueError", "TypeError", "RuntimeError",
                                     "NotImplementedError"), (
        f"{RAW_BAD_CALLS[name]} -> {outcome}; expected a ValueError/TypeError/RuntimeError"
        + (f" [{note}]" if note else ""))


# ---- memory use must not scale with stride or padding alone ----------------------------------

_PEAK_RSS_SCRIPT = """
import resource, sys, torch, fastdw
torch.set_num_threads(1)
x, w = torch.randn(1, 1, {h}, {w}), torch.randn(1, 1, 3, 3)
fastdw.depthwise_conv2d(torch.randn(1, 1, 8, 8), w, padding=1)  # warm up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = fastdw.depthwise_conv2d(x, w, None, {stride}, {padding})
print(tuple(out.shape), (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.subprocess
@pytest.mark.parametrize("h,w,stride,padding", [
    (64, 8, (1, 2**16), 1),      # ~270 MB for a 64x1 output when written
    (8, 8, 2000, 2000),          # ~580 MB for a 3x3 output when written
])
def test_memory_does_not_scale_with_stride_or_padding(h, w, stride, padding):
    """Peak RSS of one forward is bounded by its input/output sizes (plus a little), not by
    stride * rows or padding^2.

    BUG (when written): the NCHW kernels materialise a padded plane of
    (H + 2*pad_h) * (W + 2*pad_w + 16*stride_w) elements per thread. Repro (peak RSS +280 MB,
    F.conv2d +3 MB):
        fastdw.depthwise_conv2d(torch.randn(1, 1, 64, 8), torch.randn(1, 1, 3, 3), None,
                                (1, 2**16), 1)
    and +580 MB for fastdw.depthwise_conv2d(torch.randn(1, 1, 8, 8), w, None, 2000, 2000)
    whose output is 3x3.
    """
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS_SCRIPT.format(h=h, w=w, stride=stride,
                                                       padding=padding)],
        capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shape, growth_mb = proc.stdout.strip().rsplit(" ", 1)
    assert int(growth_mb) < 50, f"output {shape}: peak RSS grew by {growth_mb} MB"


# ---- determinism ---------------------------------------------------------------------------

_DET_CASES = [
    dict(shape=(3, 24, 21, 19), k=(5, 5), m=2, conv=dict(padding=2)),
    dict(shape=(2, 16, 30, 26), k=(3, 7), m=1, conv=dict(stride=(2, 1), padding=(1, 3),
                                                          dilation=(1, 2))),
    dict(shape=(4, 8, 17, 17), k=(3, 3), m=3, conv=dict(stride=2, padding=1)),
]


def _det_run(case, dtype, layout):
    gen = torch.Generator().manual_seed(7)
    n, c, h, w = case["shape"]
    x = _layout(torch.randn(n, c, h, w, generator=gen).to(dtype), layout).requires_grad_()
    wt = torch.randn(c * case["m"], 1, *case["k"], generator=gen).to(dtype).requires_grad_()
    b = torch.randn(c * case["m"], generator=gen).to(dtype).requires_grad_()
    out = fastdw.depthwise_conv2d(x, wt, b, **case["conv"])
    g = torch.randn(out.shape, generator=gen).to(dtype)
    grads = torch.autograd.grad(out, (x, wt, b), _layout(g, layout))
    return [out.detach(), *grads]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_bitwise_deterministic_across_runs_and_thread_counts(dtype, layout):
    """Output and all gradients are bitwise identical over repeated runs and for 1, 2 and 3
    intra-op threads (the thread-count setting is restored afterwards)."""
    saved = torch.get_num_threads()
    try:
        for ci, case in enumerate(_DET_CASES):
            baseline = None
            for threads in (1, 2, 3, 1, 2):
                torch.set_num_threads(threads)
                result = _det_run(case, dtype, layout)
                if baseline is None:
                    baseline = result
                    continue
                for name, a, b in zip(("output", "grad_input", "grad_weight", "grad_bias"),
                                      result, baseline):
                    assert a.stride() == b.stride() and torch.equal(a, b), (
                        f"case {ci} {dtype} {layout}: {name} with {threads} threads differs "
                        f"from 1 thread (max diff {(a.double() - b.double()).abs().max():.3g})")
    finally:
        torch.set_num_threads(saved)


# ---- memory growth -------------------------------------------------------------------------

def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_no_rss_growth_over_10000_calls():
    """10,000 forward + backward calls (both layouts, with bias) leave RSS within 20 MB of what
    it was after warm-up."""
    x = torch.randn(2, 8, 12, 12)
    xs = [x, x.contiguous(memory_format=torch.channels_last)]
    xs = [t.requires_grad_() for t in xs]
    w = torch.randn(16, 1, 3, 3, requires_grad=True)
    b = torch.randn(16, requires_grad=True)

    def step(i):
        xi = xs[i % 2]
        out = fastdw.depthwise_conv2d(xi, w, b, stride=1 + i % 2, padding=1)
        torch.autograd.grad(out.sum(), (xi, w, b))

    for i in range(300):
        step(i)
    gc.collect()
    before = _rss_mb()
    for i in range(10_000):
        step(i)
    gc.collect()
    growth = _rss_mb() - before
    assert growth < 20, f"RSS grew by {growth:.1f} MB over 10,000 forward+backward calls"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_no_cuda_memory_growth_over_10000_calls():
    x = torch.randn(2, 8, 12, 12, device="cuda", requires_grad=True)
    w = torch.randn(16, 1, 3, 3, device="cuda", requires_grad=True)
    b = torch.randn(16, device="cuda", requires_grad=True)
    for _ in range(50):
        torch.autograd.grad(fastdw.depthwise_conv2d(x, w, b, padding=1).sum(), (x, w, b))
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for _ in range(10_000):
        torch.autograd.grad(fastdw.depthwise_conv2d(x, w, b, padding=1).sum(), (x, w, b))
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before


# ---- concurrent Python threads -------------------------------------------------------------

_THREAD_CASES = [
    (torch.float64, "nchw", (2, 3, 11, 9), (3, 3), 1, dict(padding=1)),
    (torch.float32, "channels_last", (3, 16, 14, 15), (5, 5), 2, dict(padding=2, stride=2)),
    (torch.bfloat16, "nchw", (2, 8, 20, 13), (3, 7), 3, dict(padding=(1, 3), dilation=(2, 1))),
    (torch.float16, "channels_last", (1, 24, 9, 10), (1, 3), 1, dict(padding=(0, 4))),
]


def test_concurrent_calls_from_four_threads():
    """Four Python threads, each with its own configuration, call forward+backward 25 times
    concurrently; every result equals the one computed alone beforehand (bitwise)."""
    expected, problems = [], []
    for dtype, layout, shape, k, m, conv in _THREAD_CASES:
        gen = torch.Generator().manual_seed(len(problems))
        x = _layout(torch.randn(shape, generator=gen).to(dtype), layout)
        w = torch.randn(shape[1] * m, 1, *k, generator=gen).to(dtype)
        b = torch.randn(shape[1] * m, generator=gen).to(dtype)
        out = _conv_ref(x.double(), w.double(), b.double(), **conv)
        g = torch.randn(out.shape, generator=gen).to(dtype)
        alone = _fwd_and_grads(fastdw.depthwise_conv2d, x, w, b, g, **conv)
        # Sanity: what the threads reproduce is itself right.
        ref = accuracy.expected(lambda *t: _conv_ref(*t, **conv), [x, w, b], g)
        for a, r in zip([alone[0], *alone[1]], ref):
            assert_matches(a, r, dtype, f"{dtype} {layout} alone")
        problems.append((x, w, b, g, conv))
        expected.append(alone)

    barrier = threading.Barrier(len(problems))
    errors = []

    def worker(i):
        try:
            x, w, b, g, conv = problems[i]
            barrier.wait()
            for it in range(25):
                out, grads = _fwd_and_grads(fastdw.depthwise_conv2d, x, w, b, g, **conv)
                exp_out, exp_grads = expected[i]
                for name, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"),
                                      [out, *grads], [exp_out, *exp_grads]):
                    if not torch.equal(a, e):
                        errors.append(f"thread {i} iteration {it}: {name} differs")
                        return
        except Exception as e:  # noqa: BLE001
            errors.append(f"thread {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(problems))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors

"""Property-based fuzzing of fastdw (issue 8).

* test_fuzz_matches_reference: random geometry (rectangular kernels 1-9, stride 1-4, dilation
  1-3, padding from 0 to beyond the kernel or 'same'/'valid', multiplier 1-3, batch 0-3, H/W
  down to 1, unbatched input), every dtype, every input layout (NCHW, channels_last, sliced,
  permuted, expanded, storage offset), non-contiguous weight/bias/grad_output, on every device
  this machine has; forward and all three gradients vs the float64 F.conv2d reference, with a
  per-element error bound of fastdw.accuracy (the tests' one rule).
* test_fuzz_bad_arguments: random (mostly invalid) arguments through the public API must raise
  ValueError/TypeError/RuntimeError, or else give F.conv2d's answer.
* test_fuzz_raw_ops_in_subprocess: random, mostly inconsistent calls to the raw torch.ops in a
  child interpreter (tests/support/raw_op_fuzz.py), which must never die by a signal.

FASTDW_FUZZ=ci (default) runs ~200 examples per property; FASTDW_FUZZ=long runs 10,000.
"""
from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, example, given, strategies as st

import fastdw
import fastdw.geometry
from fastdw import accuracy
from tests.support.child import ROOT, child_env, run_python
from tests.support.reference_check import assert_matches, depthwise_expected

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
INPUT_LAYOUTS = ["nchw", "channels_last", "sliced_w", "sliced_c", "transposed_hw",
                 "permuted_nhwc", "expanded_n", "storage_offset"]
GRAD_LAYOUTS = ["contiguous", "channels_last", "sliced_w", "transposed_hw", "expanded"]
LONG = os.environ.get("FASTDW_FUZZ", "ci") == "long"


# ---- random valid problems -----------------------------------------------------------------

@st.composite
def conv_problems(draw):
    kh, kw = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    mode = draw(st.sampled_from(["int", "int", "int", "pair", "same", "valid"]))
    if mode == "same":
        sh = sw = 1
    else:
        sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    if mode in ("int", "pair"):
        # 0 .. beyond the kernel (padding larger than the dilated kernel gives border outputs
        # that see no input at all).
        ph = draw(st.integers(0, kh + 3))
        pw = ph if mode == "int" else draw(st.integers(0, kw + 3))
        padding = ph if mode == "int" else (ph, pw)
    else:
        ph = pw = 0
        padding = mode
    eff_h, eff_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if mode == "same":
        min_h = min_w = 1
    else:
        min_h, min_w = max(1, eff_h - 2 * ph), max(1, eff_w - 2 * pw)
    h = min_h + draw(st.integers(0, 8))
    w = min_w + draw(st.integers(0, 8))
    n = draw(st.integers(0, 3))
    return dict(n=n, c=draw(st.integers(1, 4)), m=draw(st.integers(1, 3)), h=h, w=w, kh=kh,
                kw=kw, stride=(sh, sw) if sh != sw or draw(st.booleans()) else sh,
                padding=padding, dilation=(dh, dw), bias=draw(st.booleans()),
                unbatched=(n == 1 and draw(st.integers(0, 4)) == 0))


def _layout_input(leaf, layout):
    """A view/copy of ``leaf`` with the requested memory layout, differentiable w.r.t. leaf."""
    if layout == "nchw":
        return leaf
    if layout == "channels_last":
        if leaf.dim() == 3:  # unbatched: HWC storage
            return leaf[None].contiguous(memory_format=torch.channels_last)[0]
        return leaf.contiguous(memory_format=torch.channels_last)
    if layout == "sliced_w":  # every other column of a buffer twice as wide
        return torch.stack([leaf, torch.zeros_like(leaf)], dim=-1).flatten(-2)[..., ::2]
    if layout == "sliced_c":  # every other channel of a buffer with twice the channels
        buf = leaf.repeat_interleave(2, dim=-3)
        return buf[..., ::2, :, :]
    if layout == "transposed_hw":
        return leaf.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "permuted_nhwc":  # NHWC storage but N, C swapped too: not any dense format
        if leaf.dim() == 4:
            return leaf.permute(1, 2, 3, 0).contiguous().permute(3, 0, 1, 2)
        return leaf.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    if layout == "expanded_n":  # stride-0 batch: every image is the same memory
        if leaf.dim() == 4 and leaf.shape[0] > 0:
            return leaf[:1].expand_as(leaf)
        return leaf
    if layout == "storage_offset":
        flat = torch.cat([torch.zeros(7, dtype=leaf.dtype, device=leaf.device), leaf.flatten()])
        return flat[7:].view(leaf.shape)
    raise AssertionError(layout)


def _layout_grad(g, layout, generator):
    if layout == "contiguous":
        return g
    if g.dim() < 4 and layout == "channels_last":
        return g
    if layout == "channels_last":
        return g.contiguous(memory_format=torch.channels_last)
    if layout == "sliced_w":
        wide = torch.zeros(*g.shape[:-1], 2 * g.shape[-1], dtype=g.dtype, device=g.device)
        wide[..., ::2] = g
        return wide[..., ::2]
    if layout == "transposed_hw":
        return g.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "expanded":  # what out.sum().backward() hands over: all strides 0
        v = torch.randn((), generator=generator, dtype=torch.float64).to(g.dtype)
        return v.to(g.device).expand(g.shape)
    raise AssertionError(layout)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@given(p=conv_problems(), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(INPUT_LAYOUTS), grad_layout=st.sampled_from(GRAD_LAYOUTS),
       weight_nc=st.booleans(), seed=st.integers(0, 2**31 - 1))
@example(p=dict(n=1, c=1, m=1, h=1, w=1, kh=1, kw=1, stride=1, padding=0, dilation=(1, 1),
                bias=False, unbatched=False), dtype=torch.float32, layout="nchw",
         grad_layout="contiguous", weight_nc=False, seed=0)
@example(p=dict(n=0, c=3, m=2, h=5, w=4, kh=3, kw=2, stride=(2, 1), padding=(4, 0),
                dilation=(1, 2), bias=True, unbatched=False), dtype=torch.bfloat16,
         layout="channels_last", grad_layout="contiguous", weight_nc=True, seed=1)
@example(p=dict(n=2, c=2, m=3, h=3, w=2, kh=9, kw=9, stride=4, padding=(11, 12),
                dilation=(3, 3), bias=True, unbatched=False), dtype=torch.float16,
         layout="sliced_c", grad_layout="expanded", weight_nc=True, seed=2)
@example(p=dict(n=1, c=3, m=2, h=6, w=5, kh=2, kw=3, stride=1, padding="same",
                dilation=(2, 1), bias=True, unbatched=True), dtype=torch.float32,
         layout="channels_last", grad_layout="transposed_hw", weight_nc=False, seed=3)
def test_fuzz_matches_reference(device, p, dtype, layout, grad_layout, weight_nc, seed):
    gen = torch.Generator().manual_seed(seed)
    n, c, m, h, w_ = p["n"], p["c"], p["m"], p["h"], p["w"]
    xshape = (c, h, w_) if p["unbatched"] else (n, c, h, w_)
    leaf = torch.randn(xshape, generator=gen, dtype=torch.float64).to(device, dtype)
    leaf.requires_grad_()
    x = _layout_input(leaf, layout)
    weight = torch.randn(c * m, 1, p["kh"], p["kw"], generator=gen, dtype=torch.float64)
    weight = weight.to(device, dtype)
    if weight_nc:  # spatially transposed storage
        weight = weight.transpose(2, 3).contiguous().transpose(2, 3)
    weight.requires_grad_()
    bias = None
    if p["bias"]:
        bias = torch.randn(2 * c * m, generator=gen, dtype=torch.float64).to(device, dtype)
        bias = bias[::2] if weight_nc else bias[: c * m]
        bias = bias.detach().requires_grad_()
    args = (p["stride"], p["padding"], p["dilation"])

    out = fastdw.depthwise_conv2d(x, weight, bias, *args)
    assert out.device.type == device

    g = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(device, dtype)
    g = _layout_grad(g, grad_layout, gen)
    expected = depthwise_expected(x, weight, bias, g, *args)
    ref = expected[0].value

    what = f"{p} {dtype} {layout}/{grad_layout}{' w_nc' if weight_nc else ''} on {device}"
    assert out.dtype == dtype, f"{what}: dtype {out.dtype}"
    assert_matches(out, expected[0], dtype, f"forward {what}")
    if layout in ("nchw", "channels_last") and out.dim() == 4 and out.numel() > 0:
        # Same memory format as F.conv2d (the reference ran on the same layouts, on the CPU).
        same = out.is_contiguous(memory_format=torch.channels_last) == \
            ref.is_contiguous(memory_format=torch.channels_last) and \
            out.is_contiguous() == ref.is_contiguous()
        assert same, f"{what}: output strides {out.stride()} vs F.conv2d {ref.stride()}"

    inputs = (x, weight) if bias is None else (x, weight, bias)
    grads = torch.autograd.grad(out, inputs, g)
    for name, got, exp in zip(("grad_input", "grad_weight", "grad_bias"), grads, expected[1:]):
        assert got.dtype == dtype, f"{name} {what}: dtype {got.dtype}"
        assert_matches(got, exp, dtype, f"{name} {what}")


# ---- random (mostly invalid) arguments through the public API -------------------------------

_ALL_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64,
               torch.int32, torch.uint8, torch.bool, torch.complex64]
_HUGE = [2**31, 2**40, 2**62, 2**63 - 1, 2**63, 2**64, -(2**63), -(2**31)]


def _ints():
    return st.one_of(st.integers(-3, 6), st.sampled_from(_HUGE))


def _int_arg():
    """What a user might pass as stride/padding/dilation, valid or not."""
    return st.one_of(
        _ints(), _ints(),
        st.tuples(_ints(), _ints()),
        st.lists(st.integers(-2, 4), min_size=0, max_size=3),
        st.sampled_from([None, True, False, 1.0, 2.5, "same", "valid", "full", "",
                         float("nan"), (1.0, 1), "11"]),
        st.builds(torch.tensor, st.integers(0, 3)),
        st.builds(lambda v: (torch.tensor(v), 1), st.integers(0, 3)))


@st.composite
def _tensor_arg(draw, channels=None, role="input"):
    kind = draw(st.sampled_from(["tensor"] * 6 + ["list", "none", "scalar", "meta", "sparse"]))
    if kind == "list":
        return [[1.0, 2.0]]
    if kind == "none":
        return None
    if kind == "scalar":
        return draw(st.sampled_from([1.0, 3, "x"]))
    if role == "weight" and channels is not None and draw(st.booleans()):
        shape = [channels * draw(st.integers(0, 3)), draw(st.sampled_from([1, 1, 1, 2])),
                 draw(st.integers(0, 4)), draw(st.integers(0, 4))]
    elif role == "bias":
        shape = draw(st.lists(st.integers(0, 6), min_size=0, max_size=2))
    else:
        ndim = draw(st.sampled_from([4, 4, 4, 3, 0, 1, 2, 5]))
        shape = draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim))
    dtype = draw(st.sampled_from(_ALL_DTYPES[:4] * 3 + _ALL_DTYPES[4:]))
    t = torch.ones(shape, dtype=dtype) if dtype in (torch.bool, torch.uint8) else \
        (torch.randn(shape) * 3).to(dtype)
    if kind == "meta":
        t = t.to("meta")
    elif kind == "sparse" and t.dim() >= 1:
        t = t.to_sparse()
    elif t.dim() == 4 and draw(st.booleans()):
        t = t.contiguous(memory_format=torch.channels_last)
    return t


@st.composite
def _api_calls(draw):
    x = draw(_tensor_arg(role="input"))
    channels = x.shape[-3] if isinstance(x, torch.Tensor) and x.dim() >= 3 else None
    w = draw(_tensor_arg(channels=channels, role="weight"))
    b = draw(st.one_of(st.none(), _tensor_arg(role="bias")))
    return dict(input=x, weight=w, bias=b, stride=draw(_int_arg()), padding=draw(_int_arg()),
                dilation=draw(_int_arg()))


def _ordinary(v):
    """Small ints only: the sizes F.conv2d itself handles without int64 overflow."""
    if isinstance(v, (tuple, list)):
        return all(_ordinary(e) for e in v)
    if isinstance(v, str):
        return True
    return isinstance(v, int) and abs(v) < 2**31


def _would_allocate_too_much(call):
    """True if a valid-looking call could allocate more than ~1 GB (skip: RAM is shared)."""
    x, w = call["input"], call["weight"]
    if not (isinstance(x, torch.Tensor) and isinstance(w, torch.Tensor)) or w.dim() != 4 \
            or x.dim() < 2:
        return False
    try:
        s, p, d = (fastdw.geometry.pair(call[k], k) for k in ("stride", "padding", "dilation"))
    except Exception:
        return False
    n = x.shape[0] if x.dim() == 4 else 1
    numel = n * max(1, w.shape[0])
    for i in range(2):
        size = x.shape[-2 + i] + 2 * max(p[i], 0) - max(d[i], 1) * (w.shape[2 + i] - 1) - 1
        numel *= max(size // max(s[i], 1) + 1, 1)
    return 2**27 < numel < 2**48  # smaller is cheap, larger fails cleanly in the allocator


@given(call=_api_calls())
def test_fuzz_bad_arguments(call):
    assume(not _would_allocate_too_much(call))
    try:
        out = fastdw.depthwise_conv2d(**call)
    except (ValueError, TypeError, RuntimeError) as e:
        assert str(e), "empty error message"
        return
    # It ran: then the arguments were valid, and F.conv2d must agree.
    x, w, b = call["input"], call["weight"], call["bias"]
    assert isinstance(out, torch.Tensor)
    if x.device.type == "meta" or not all(_ordinary(call[k]) for k in
                                          ("stride", "padding", "dilation")):
        return
    def conv(x, w, b):
        return F.conv2d(x, w, b, call["stride"], call["padding"], call["dilation"], x.shape[-3])
    try:
        expected, = accuracy.expected(conv, [x, w, b])
    except RuntimeError as e:
        # Zero-size H/W (N, C > 0): F.conv2d refuses, fastdw computes (reported as a bug and
        # pinned by test_hardening.py::test_zero_spatial_size_matches_conv2d).
        if x.shape[-1] == 0 or x.shape[-2] == 0:
            return
        raise AssertionError(f"fastdw accepted {call} but F.conv2d raised {e}") from e
    assert out.dtype == x.dtype
    assert_matches(out, expected, x.dtype, f"{call}")


# ---- raw ops, crash-prone: in a child interpreter -------------------------------------------

@pytest.mark.subprocess
def test_fuzz_raw_ops_in_subprocess(tmp_path):
    count = 10_000 if LONG else 400
    log = tmp_path / "raw_op_fuzz.jsonl"
    proc = run_python(
        [os.path.join(ROOT, "tests", "support", "raw_op_fuzz.py"), "--count", str(count),
         "--seed", "0" if not LONG else str(int.from_bytes(os.urandom(4), "little")),
         "--log", str(log)], env=child_env(), timeout=3000 if LONG else 300)
    last = ""
    if log.exists():
        lines = log.read_text().splitlines()
        last = lines[-1] if lines else ""
    assert proc.returncode >= 0, (
        f"raw-op fuzz child died by signal {-proc.returncode}; last case (repro): {last}\n"
        f"{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    failures = summary.pop("failures")
    # Real tensors first; then meta ones (the ops' fake kernels, which torch.compile runs).
    for on_meta in (False, True):
        found = [f for f in failures if f["meta"] == on_meta]
        assert not found, (
            f"{summary['failed']} raw-op fuzz failures ({'meta' if on_meta else 'cpu'} shown); "
            "replay one with: python tests/support/raw_op_fuzz.py --replay '<case>'\n" + "\n".join(
                f"{f['failure'][:300]}\n    case: {json.dumps(f['case'])}" for f in found[:5]))
    assert proc.returncode == 0, f"raw-op fuzz failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert summary["cases"] == count
    assert summary["raised"] > 0 and summary["ran"] > 0, summary

"""fastdw.depthwise_separable_conv2d vs the float64 reference: the fused Triton kernels (on GPU, or
on CPU under the Triton interpreter) and the composed path; forward and every gradient.

Interpreter mode, with no GPU: see tests/support/triton_mode.py; test_triton_suite_in_subprocess reruns
the Triton tests in a fresh interpreter when fastdw.triton was imported without it.
"""
import functools

import pytest
import torch

import fastdw
from fastdw import accuracy, reference
from fastdw.separable import backend_for, depthwise_separable_conv2d
from tests.support.configs import Conv
from tests.support.reference_check import assert_close_to_reference, assert_matches
from tests.support.separable import SEP, SEPARABLE_CONFIGS, Sep, s2
from tests.support.triton_mode import (HAS_CUDA, cudnn_allow_tf32, import_fused,
                                      rerun_in_subprocess)

fused = import_fused()

LAYOUTS = ["nchw", "channels_last"]
GRAD_NAMES = ("input", "dw_weight", "dw_bias", "pw_weight", "pw_bias")


HALF_CONFIGS = [SEP["k5x5_gelu"], SEP["two_cin_chunks"]]


def _reference(args, conv_args):
    """Float64 forward of the reference with float64 leaves, and those leaves."""
    leaves = [None if t is None else t.detach().double().requires_grad_() for t in args]
    return reference.depthwise_separable_conv2d(*leaves, **conv_args), leaves


def _check(cfg, dtype, device, layout, rounded_to=None):
    """Forward and all gradients vs float64 under fastdw.accuracy's bound (``rounded_to``: the
    format the products' factors pass through; half dtypes round the depthwise result);
    returns the output and gradients."""
    channels_last = layout == "channels_last"
    args = cfg.make(dtype, device, channels_last)
    out = depthwise_separable_conv2d(*args, **cfg.conv_args)
    grad = torch.randn(out.shape, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(1))
    fn = functools.partial(reference.depthwise_separable_conv2d, **cfg.conv_args)
    expected = accuracy.expected(fn, args, grad, functools.partial(fn, bound=True))
    rounded_to = rounded_to or {torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(dtype)
    what = f"{cfg} {layout} {dtype}"
    assert out.dtype == dtype
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt), f"{what}: output strides {out.stride()}"
    assert_matches(out, expected[0], dtype, f"{what} forward", rounded_to)
    out.backward(grad.to(device, dtype).contiguous(memory_format=fmt))
    given = [t for t in args if t is not None]
    names = [n for n, t in zip(GRAD_NAMES, args) if t is not None]
    for name, t, exp in zip(names, given, expected[1:]):
        assert_matches(t.grad, exp, dtype, f"{what} grad {name}", rounded_to)
    return out, [None if t is None else t.grad for t in args]


def _assert_fused(cfg, device, dtype=torch.float32):
    x, w = cfg.make(dtype, device)[:2]
    backend, why = backend_for(x, w)
    assert backend == "triton", why


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cfg", SEPARABLE_CONFIGS, ids=str)
def test_fused_matches_reference(cfg, layout, triton_device):
    _assert_fused(cfg, triton_device)
    _check(cfg, torch.float32, triton_device, layout)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cfg", HALF_CONFIGS, ids=str)
def test_fused_half(cfg, layout, dtype, triton_device):
    _assert_fused(cfg, triton_device, dtype)
    _check(cfg, dtype, triton_device, layout)


def test_tf32(triton_device):
    """fp32 follows torch.backends.cudnn.allow_tf32: with it on, TF32 accuracy (about fp16's)."""
    with cudnn_allow_tf32(True):
        _check(SEP["k5x5_gelu"], torch.float32, triton_device, "nchw", rounded_to="tf32")


def test_pointwise_grad_pixel_splits(triton_device, monkeypatch):
    """The pointwise weight gradient reduces over pixel splits: several, the last one ragged."""
    from fastdw.triton import separable
    monkeypatch.setattr(separable, "_PW_GRAD_PIXELS_PER_SPLIT", 20)
    cfg = SEP["k3x3_relu"]  # 98 output pixels -> 5 splits of 20 (the last has 18)
    assert separable._pw_grad_splits(98) == (5, 20)
    _check(cfg, torch.float32, triton_device, "channels_last")


def test_deterministic(triton_device):
    cfg = SEP["dilation2_two_cout_tiles"]
    first = _check(cfg, torch.float32, triton_device, "nchw")
    second = _check(cfg, torch.float32, triton_device, "nchw")
    for a, b in zip([first[0]] + first[1], [second[0]] + second[1]):
        assert torch.equal(a, b)


def test_partial_grads_and_2d_pw_weight(triton_device):
    """Only some inputs require grad; pw_weight given as (C_out, C_in)."""
    cfg = SEP["k5x5_gelu"]
    x, w, b, pw, pb = cfg.make(torch.float32, triton_device)
    w.requires_grad_(False)
    pb.requires_grad_(False)
    pw2 = pw.detach().reshape(pw.shape[:2]).requires_grad_()
    out = depthwise_separable_conv2d(x, w, b, pw2, pb, **cfg.conv_args)
    leaves = [t.detach().double().requires_grad_() for t in (x, w, b, pw2, pb)]
    x64, w64, b64, pw64, pb64 = leaves
    ref = reference.depthwise_separable_conv2d(x64, w64, b64, pw64[:, :, None, None], pb64,
                                               **cfg.conv_args)
    assert_close_to_reference(out, ref, torch.float32, "forward")
    grads = torch.autograd.grad(out.sum(), (x, b, pw2))
    refs = torch.autograd.grad(ref.sum(), (x64, b64, pw64))
    for name, g, r in zip(("input", "dw_bias", "pw_weight"), grads, refs):
        assert_close_to_reference(g, r.reshape(g.shape), torch.float32, f"grad {name}")


def test_same_padding_and_unbatched(triton_device):
    """padding='same' with an even kernel (one extra row/column after) on a (C, H, W) input."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 7, 8, generator=g).to(triton_device).requires_grad_()
    w = torch.randn(6, 1, 4, 4, generator=g).to(triton_device).requires_grad_()
    pw = torch.randn(5, 6, 1, 1, generator=g).to(triton_device).requires_grad_()
    assert backend_for(x[None], w)[0] == "triton"
    out = depthwise_separable_conv2d(x, w, None, pw, None, padding="same", activation="gelu")
    x64, w64, pw64 = (t.detach().double().requires_grad_() for t in (x, w, pw))
    # 'same' for k=4: 1 before, 2 after.
    mid = torch.nn.functional.conv2d(torch.nn.functional.pad(x64, (1, 2, 1, 2)), w64, groups=6)
    ref = torch.nn.functional.conv2d(torch.nn.functional.gelu(mid), pw64)
    assert_close_to_reference(out, ref, torch.float32, "forward")
    out.sum().backward()
    ref.sum().backward()
    for name, t, t64 in (("input", x, x64), ("dw_weight", w, w64), ("pw_weight", pw, pw64)):
        assert_close_to_reference(t.grad, t64.grad, torch.float32, f"grad {name}")


@pytest.mark.parametrize("case", ["depth_multiplier_2", "float64"])
def test_unsupported_falls_back_to_composed(case, triton_device):
    if case == "float64":
        cfg, dtype = SEP["k3x3_relu"], torch.float64
    else:
        cfg, dtype = Sep(Conv(1, 3, 6, 7, m=2), 4, "relu6"), torch.float32
    x, w = cfg.make(dtype, triton_device)[:2]
    backend, why = backend_for(x, w)
    assert backend == "composed" and ("depth multiplier" in why or "float64" in why), why
    _check(cfg, dtype, triton_device, "nchw")


def test_empty_batch(triton_device):
    cfg = SEP["k3x3_relu"]
    x, w, b, pw, pb = cfg.make(torch.float32, triton_device)
    x0 = x.detach()[:0].requires_grad_()
    out = depthwise_separable_conv2d(x0, w, b, pw, pb, **cfg.conv_args)
    assert out.shape == (0, cfg.c_out, 7, 7)
    out.sum().backward()
    assert x0.grad.shape == x0.shape
    for t in (w, b, pw, pb):
        assert torch.count_nonzero(t.grad) == 0


def test_opcheck(triton_device):
    cfg = Sep(Conv(1, 4, 5, 5), 6, "gelu")
    x, w, b, pw, pb = cfg.make(torch.float32, triton_device, channels_last=True)
    conv = [list(v) for v in cfg.conv.conv_args.values()]
    torch.library.opcheck(torch.ops.fastdw.depthwise_separable_conv2d,
                          (x, w, b, pw.reshape(6, 4), pb, *conv, "gelu"))
    grad = torch.randn(1, 6, 5, 5, device=triton_device)
    detached = [t.detach() for t in (x, w, b, pw)]
    torch.library.opcheck(torch.ops.fastdw.depthwise_separable_conv2d_backward_mid,
                          (grad, *detached[:3], detached[3].reshape(6, 4), *conv, "gelu"))
    torch.library.opcheck(torch.ops.fastdw.depthwise_separable_conv2d_backward_pointwise,
                          (grad, *detached[:3], *conv, "gelu", True))


def test_torch_compile_fullgraph(triton_device):
    """On GPU Inductor sees the Triton kernels (triton_op); under the interpreter the op is opaque
    (a custom_op), so this checks tracing, fake kernels and autograd registration there."""
    cfg = SEP["k3x3_relu"]
    compiled = torch.compile(depthwise_separable_conv2d, fullgraph=True, backend="inductor")
    args = cfg.make(torch.float32, triton_device, channels_last=True)
    out = compiled(*args, **cfg.conv_args)
    ref, leaves = _reference(args, cfg.conv_args)
    assert_close_to_reference(out, ref, torch.float32, "compiled forward")
    out.sum().backward()
    ref.sum().backward()
    for name, t, t64 in zip(GRAD_NAMES, args, leaves):
        assert_close_to_reference(t.grad, t64.grad, torch.float32, f"compiled grad {name}")


@pytest.mark.subprocess
@pytest.mark.skipif(HAS_CUDA or fused.INTERPRETED,
                    reason="the Triton tests ran in this process")
def test_triton_suite_in_subprocess():
    rerun_in_subprocess(__file__)


# ---- the composed path (fastdw depthwise + activation + 1x1 conv) --------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cfg", SEPARABLE_CONFIGS, ids=str)
def test_composed_matches_reference(cfg, layout, composed):
    x, w = cfg.make(torch.float32, "cpu")[:2]
    assert backend_for(x, w)[0] == "composed"
    _check(cfg, torch.float32, "cpu", layout)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_composed_half(dtype, composed):
    _check(SEP["k5x5_gelu"], dtype, "cpu", "channels_last")


def test_composed_gradcheck_and_gradgradcheck(composed):
    cfg = Sep(Conv(1, 3, 5, 6, stride=s2), 4, "gelu")
    args = tuple(cfg.make(torch.float64, "cpu"))

    def fn(*a):
        return depthwise_separable_conv2d(*a, **cfg.conv_args)

    assert torch.autograd.gradcheck(fn, args)
    assert torch.autograd.gradgradcheck(fn, args)


def test_composed_torch_compile_fullgraph(composed):
    """aot_eager: Inductor's CPU C++ compile would add tens of seconds for nothing new here."""
    cfg = SEP["k5x5_gelu"]
    compiled = torch.compile(depthwise_separable_conv2d, fullgraph=True, backend="aot_eager")
    args = cfg.make(torch.float32, "cpu")
    out = compiled(*args, **cfg.conv_args)
    assert_close_to_reference(out, _reference(args, cfg.conv_args)[0], torch.float32, "forward")


# ---- argument validation -----------------------------------------------------------------

def _valid_args():
    x = torch.randn(1, 4, 6, 6)
    return [x, torch.randn(4, 1, 3, 3), torch.randn(4), torch.randn(8, 4, 1, 1), torch.randn(8)]


@pytest.mark.parametrize("index, value, kwargs, error, match", [
    (None, None, dict(activation="tanh"), ValueError, "activation must be None or one of"),
    (3, torch.randn(8, 5, 1, 1), {}, ValueError, r"pw_weight must have shape \(C_out, 4, 1, 1\)"),
    (3, torch.randn(8, 4, 3, 3), {}, ValueError, "pw_weight must have shape"),
    (3, torch.randn(8, 4, 1, 1, dtype=torch.float64), {}, TypeError, "pw_weight has dtype"),
    (3, [[1.0]], {}, TypeError, "pw_weight must be a torch.Tensor"),
    (4, torch.randn(7), {}, ValueError, r"pw_bias must have shape \(8,\)"),
    (1, torch.randn(4, 2, 3, 3), {}, ValueError, "dw_weight"),
    (2, torch.randn(5), {}, ValueError, "bias must have shape .* dw_bias"),
    (None, None, dict(stride=0), ValueError, "stride must be positive"),
    (0, torch.randn(4, 6), {}, ValueError, "input must be 4-D"),
])
def test_validation(index, value, kwargs, error, match, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    args = _valid_args()
    if index is not None:
        args[index] = value
    with pytest.raises(error, match=match):
        depthwise_separable_conv2d(*args, **kwargs)


def test_exported():
    assert fastdw.depthwise_separable_conv2d is depthwise_separable_conv2d

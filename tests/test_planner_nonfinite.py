"""NaN and Inf meet the zero padding as in PyTorch (oneDNN leaves padded taps out, never
multiplying them by zero: 0 * Inf = NaN), on every CPU kernel the planner can force and every ISA
copy: weights_finite is a plan input for forward and backward-input, and a non-finite
weight gradient from a kernel that materialises padding is recomputed on nhwc_pixels.

The expected values come from `skip_padding_conv` (float64 PyTorch ops that sum in-bounds taps
only), which `test_reference_matches_f_conv2d` anchors to F.conv2d's float32 oneDNN path."""
import pytest
import torch
import torch.nn.functional as F

import fastdw
from fastdw import planner
from tests.support import isas

KERNELS = list(planner.kernels())
LAYOUTS = ["nchw", "channels_last"]
WHERE = ["weight", "grad_output"]
# (N, C, H, W), (kh, kw), multiplier, stride, padding, dilation
CASES = [
    ((2, 16, 9, 9), (3, 3), 1, (1, 1), (1, 1), (1, 1)),
    ((2, 16, 9, 9), (3, 3), 1, (2, 2), (1, 1), (1, 1)),
    ((1, 17, 7, 8), (5, 5), 1, (1, 1), (2, 2), (1, 1)),
    ((2, 3, 6, 7), (3, 3), 2, (1, 1), (2, 1), (1, 2)),
]


def skip_padding_conv(x, w, b, stride, padding, dilation):
    """Depthwise conv of float64 tensors over in-bounds taps only: each tap's term is selected
    (torch.where), never multiplied by a zero, in the forward and in autograd's backward."""
    n, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    m = w.shape[0] // c
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    xr = x.repeat_interleave(m, dim=1)
    out = torch.zeros(n, c * m, oh, ow, dtype=x.dtype) + (0 if b is None else b.view(1, -1, 1, 1))
    for i in range(kh):
        for j in range(kw):
            rows = torch.arange(oh) * stride[0] - padding[0] + i * dilation[0]
            cols = torch.arange(ow) * stride[1] - padding[1] + j * dilation[1]
            valid = (((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < wd))[None, :])
            xs = xr[:, :, rows.clamp(0, h - 1)][:, :, :, cols.clamp(0, wd - 1)]
            xs = torch.where(valid, xs, torch.zeros((), dtype=x.dtype))
            term = w[:, 0, i, j].view(1, -1, 1, 1) * xs
            out = out + torch.where(valid, term, torch.zeros((), dtype=x.dtype))
    return out


def assert_same_nonfinite(got, expected, what):
    got, expected = got.detach().double(), expected.detach().double()
    assert torch.equal(got.isnan(), expected.isnan()), f"{what}: NaN positions differ"
    assert torch.equal(got == float("inf"), expected == float("inf")), f"{what}: +Inf differs"
    assert torch.equal(got == -float("inf"), expected == -float("inf")), f"{what}: -Inf differs"
    finite = expected.isfinite()
    scale = max(1.0, expected[finite].abs().max().item()) if finite.any() else 1.0
    err = (got[finite] - expected[finite]).abs().max().item() if finite.any() else 0.0
    assert err <= 3e-2 * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})"


def poisoned(case, dtype, where, layout, seed=0):
    shape, (kh, kw), m, stride, padding, dilation = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    w = torch.randn(shape[1] * m, 1, kh, kw, generator=g, dtype=torch.float64)
    b = torch.randn(shape[1] * m, generator=g, dtype=torch.float64)
    oh = (shape[2] + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (shape[3] + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    gy = torch.randn(shape[0], shape[1] * m, oh, ow, generator=g, dtype=torch.float64)
    flat = dict(weight=w, grad_output=gy)[where].view(-1)
    flat[0], flat[flat.numel() // 3], flat[-1] = float("inf"), float("nan"), -float("inf")
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    cast = lambda t: t.to(dtype)  # noqa: E731
    return (cast(x).contiguous(memory_format=fmt), cast(w), cast(b),
            cast(gy).contiguous(memory_format=fmt), dict(stride=stride, padding=padding,
                                                         dilation=dilation))


def check(case, dtype, where, layout):
    x, w, b, gy, conv = poisoned(case, dtype, where, layout)
    leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
    ref = skip_padding_conv(*leaves, **conv)
    ref_grads = torch.autograd.grad(ref, leaves, gy.double())
    mine = [t.detach().requires_grad_() for t in (x, w, b)]
    out = fastdw.depthwise_conv2d(*mine, **conv)
    grads = torch.autograd.grad(out, mine, gy)
    label = f"{case} {dtype} {where} {layout}"
    for name, got, exp in zip(("output", "grad_input", "grad_weight", "grad_bias"),
                              (out,) + grads, (ref,) + ref_grads):
        assert_same_nonfinite(got, exp, f"{label}: {name}")


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_reference_matches_f_conv2d(where, layout):
    """skip_padding_conv agrees with F.conv2d float32 (oneDNN), output and all gradients,
    NaN/Inf positions included."""
    case = CASES[1]
    x, w, b, gy, conv = poisoned(case, torch.float32, where, layout)
    results = []
    for fn, dtype in ((F.conv2d, torch.float32), (skip_padding_conv, torch.float64)):
        leaves = [t.detach().to(dtype).requires_grad_() for t in (x, w, b)]
        out = fn(*leaves, **conv, **({"groups": x.shape[1]} if fn is F.conv2d else {}))
        results.append((out,) + torch.autograd.grad(out, leaves, gy.to(dtype)))
    for name, got, exp in zip(("output", "grad_input", "grad_weight", "grad_bias"), *results):
        assert_same_nonfinite(got, exp, f"{where} {layout}: {name}")


def test_issue_example():
    """Inf on the first tap lands only on padding for the first row and column."""
    x = torch.ones(1, 2, 4, 4)
    w = torch.ones(2, 1, 3, 3)
    w[:, 0, 0, 0] = float("inf")
    for kernel in KERNELS + ["fastdw"]:
        with planner.force(kernel=kernel):
            for layout in (torch.contiguous_format, torch.channels_last):
                got = fastdw.depthwise_conv2d(x.contiguous(memory_format=layout), w, padding=1)
                assert got[0, 0, 0].tolist() == [4, 6, 6, 4], (kernel, layout)
                assert got[0, 0, :, 0].tolist() == [4, 6, 6, 4], (kernel, layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_every_kernel(kernel, layout):
    with planner.force(kernel=kernel):
        for case in CASES:
            for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
                for where in WHERE:
                    check(case, dtype, where, layout)


@pytest.mark.parametrize("isa", isas.params())
def test_every_isa_copy(isa):
    if not planner.isas()[isa]:
        pytest.skip(f"this CPU cannot run the {isa} copy")
    with planner.force(isa=isa):
        for kernel in [k for k in KERNELS if k != "aten"]:
            with planner.force(kernel=kernel):
                for case in CASES[:3]:
                    for layout in LAYOUTS:
                        for where in WHERE:
                            check(case, torch.float32, where, layout)

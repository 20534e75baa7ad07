"""NaN and Inf meet the zero padding as in PyTorch: padded taps are left out, never multiplied by
zero (0 * Inf = NaN), on every CPU route, dtype, layout and ISA build, forward and backward.

PyTorch's oneDNN path (float32/bfloat16/float16 on CPU) leaves padded taps out; its float64 and
small-shape fallbacks multiply the padding instead, so PyTorch does not agree with itself. The
expected values come from ``skip_padding_reference`` (PyTorch ops, float64), which
``test_reference_is_pytorchs_onednn_semantics`` anchors to F.conv2d's oneDNN path.
"""
import pytest
import torch
import torch.nn.functional as F

import fastdw
from fastdw import planner
from tests.support import isas
from tests.support.child import child_env, run_python
from tests.support.parity import (CPU_ROUTES as ROUTES, LAYOUTS, NONFINITE_CASES,
                                  assert_same_nonfinite, check_nonfinite,
                                  skip_padding_reference)

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
WHERE = ["weight", "grad_output", "input"]
CASES = list(NONFINITE_CASES.values())


def test_issue_example_matches_f_conv2d():
    """The issue's repro: the Inf tap lands only on padding for the first row and column."""
    x = torch.ones(1, 2, 4, 4)
    w = torch.ones(2, 1, 3, 3)
    w[:, 0, 0, 0] = float("inf")
    expected = F.conv2d(x, w, padding=1, groups=2)
    assert expected[0, 0, 0].tolist() == [4, 6, 6, 4] and expected[0, 0, :, 0].tolist() == \
        [4, 6, 6, 4]
    for dtype in DTYPES:
        for layout in LAYOUTS:
            got = fastdw.depthwise_conv2d(x.to(dtype).contiguous(memory_format=layout),
                                          w.to(dtype), padding=1)
            assert_same_nonfinite(got, expected, f"{dtype} {layout}")
            torch.testing.assert_close(got.float().nan_to_num(posinf=0),
                                       expected.nan_to_num(posinf=0))


def test_issue_example_bf16_channels_last():
    """bf16 channels_last (8, 2, 14, 14) gave 432 NaN before. The expected values are
    skip_padding_reference's: F.conv2d in bfloat16 takes oneDNN's path only on CPUs with
    oneDNN bfloat16 support, and multiplies the padding elsewhere."""
    x = torch.ones(8, 2, 14, 14, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    w = torch.ones(2, 1, 3, 3, dtype=torch.bfloat16)
    w[:, 0, 0, 0] = float("inf")
    got = fastdw.depthwise_conv2d(x, w, padding=1)
    assert int(got.isnan().sum()) == 0
    expected = skip_padding_reference(x.double(), w.double(), padding=1)
    assert_same_nonfinite(got, expected, "bf16 channels_last")
    torch.testing.assert_close(got.double().nan_to_num(posinf=0),
                               expected.nan_to_num(posinf=0))


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("layout", LAYOUTS, ids=["nchw", "channels_last"])
def test_reference_is_pytorchs_onednn_semantics(where, layout):
    """The expected values' source agrees with F.conv2d float32 (oneDNN on this CPU; shapes with
    C >= 2 and N >= 2 take it), output and all gradients, NaN/Inf positions included."""
    case = NONFINITE_CASES["stride2_16_channels"]
    x, w, b = case.make(torch.float32)
    g = torch.randn(2, 16, 5, 5, generator=torch.Generator().manual_seed(3))
    flat = dict(input=x, weight=w, grad_output=g)[where].view(-1)
    flat[0], flat[flat.numel() // 3], flat[-1] = float("inf"), float("nan"), -float("inf")
    x, g = x.contiguous(memory_format=layout), g.contiguous(memory_format=layout)
    results = []
    for fn, dtype in ((F.conv2d, torch.float32), (skip_padding_reference, torch.float64)):
        leaves = [t.detach().to(dtype).requires_grad_() for t in (x, w, b)]
        kwargs = dict(case.kwargs, **({"groups": 16} if fn is F.conv2d else {}))
        out = fn(*leaves, **kwargs)
        results.append((out,) + torch.autograd.grad(out, leaves, g.to(dtype)))
    for name, got, exp in zip(("output", "grad_input", "grad_weight", "grad_bias"), *results):
        assert_same_nonfinite(exp, got, f"{where} {layout}: {name}")


@pytest.mark.slow
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"blocked={r or 'auto'}")
@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("layout", LAYOUTS, ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_route(case, dtype, layout, where, route, monkeypatch):
    monkeypatch.setenv("FASTDW_CPU_BLOCKED", route)
    check_nonfinite(fastdw.depthwise_conv2d, case, dtype, where, layout)


@pytest.mark.subprocess
@pytest.mark.slow
@pytest.mark.parametrize("isa", isas.params())
def test_every_isa_build(isa):
    """Each instruction-set copy of the kernels (chosen once per process: a subprocess each),
    in float32 and bfloat16 (the vector paths; float64 and float16 share their code), with the
    weight or grad_output poisoned (the inputs' NaN/Inf never meet padding)."""
    code = (
        "import os, torch, fastdw\n"
        "from fastdw import _C\n"
        "from tests.support.parity import CPU_ROUTES, LAYOUTS, NONFINITE_CASES, check_nonfinite\n"
        f"if _C.cpu_isa() != {isa!r}: print('unavailable'); raise SystemExit\n"
        "for route in CPU_ROUTES:\n"
        "    os.environ['FASTDW_CPU_BLOCKED'] = route\n"
        "    for case in NONFINITE_CASES.values():\n"
        "        for dtype in (torch.float32, torch.bfloat16):\n"
        "            for layout in LAYOUTS:\n"
        "                for where in ('weight', 'grad_output'):\n"
        "                    check_nonfinite(fastdw.depthwise_conv2d, case, dtype, where, layout)\n"
        "print('ok')\n")
    result = run_python(["-c", code], env=child_env(FASTDW_CPU_ISA=isa))
    if result.stdout.strip() == "unavailable":
        pytest.skip(f"this CPU cannot run the {isa} build")
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]

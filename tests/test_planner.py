"""The CPU planner's interface (fastdw.planner, fastdw.explain, fastdw.backends.cpu): what it
reports, the overrides, benchmark mode, plan files and the tune command."""
import json
import os
import subprocess
import sys

import pytest
import torch

import fastdw
from fastdw import planner
from tests.support.configs import Conv
from tests.support.reference_check import check_against_reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CL = torch.channels_last


@pytest.fixture
def no_cached_plans():
    planner.clear_plans()
    yield
    planner.clear_plans()
    fastdw.backends.cpu.benchmark = False


def test_kernels_and_isas_are_listed():
    ks = planner.kernels()
    assert list(ks)[0] == "aten" and {"nchw_planes", "nhwc_pixels", "nhwc_tiles",
                                      "channel_blocks"} <= set(ks)
    assert all(ks.values())
    isas = planner.isas()
    assert list(isas) == ["generic", "avx2", "avx512", "avx512_bf16"] and isas["generic"]
    assert fastdw.backends.cpu.isa in [k for k, ok in isas.items() if ok]


@pytest.mark.parametrize("pass_", planner.PASSES)
def test_explain_names_a_kernel_that_applies(pass_):
    x = torch.randn(2, 32, 14, 14)
    w = torch.randn(32, 1, 3, 3)
    plan = fastdw.explain(x, w, padding=1, pass_=pass_)
    assert plan.kernel in planner.kernels() and plan.isa in planner.isas()
    assert plan.reason and plan.source in ("rules", "plan file")
    prob = planner.problem(x, w, 1, 1, 1, pass_)
    assert planner.unsupported(plan.kernel, prob) is None
    assert plan.kernel in str(plan)


def test_explain_reports_relayouts_and_flipped_forward():
    # Non-finite weights over padding: the NCHW kernels do not apply; the plan runs a
    # channels_last kernel between two layout copies.
    x = torch.randn(1, 16, 9, 9)
    w = torch.randn(16, 1, 3, 3)
    w[0, 0, 0, 0] = float("inf")
    plan = fastdw.explain(x, w, padding=1)
    assert plan.kernel in ("nhwc_tiles", "nhwc_windows", "nhwc_pixels", "aten"), plan
    if plan.kernel != "aten":
        assert plan.relayouts == ("inputs to channels_last", "result back to contiguous")
    with planner.force(kernel="nchw_planes"):
        forced = fastdw.explain(x, w, padding=1)
        assert forced.kernel != "nchw_planes" and "NaN" in forced.note
    # Backward-input with stride 1 on the tiles: the forward conv with the flipped kernel.
    xc = torch.randn(1, 16, 9, 9).contiguous(memory_format=CL)
    with planner.force(kernel="nhwc_tiles"):
        plan = fastdw.explain(xc, torch.randn(16, 1, 3, 3), padding=1, pass_="bwd_input")
    assert plan.kernel == "nhwc_tiles" and plan.source == "forced"
    assert plan.relayouts == ("forward conv of grad_output with the flipped kernel",)


def test_explain_argument_forms_and_errors():
    x = torch.randn(3, 10, 11)  # unbatched
    w = torch.randn(3, 1, 4, 4)
    assert fastdw.explain(x, w, padding="same").kernel in planner.kernels()
    with pytest.raises(ValueError, match="pass_"):
        fastdw.explain(x, w, pass_="backward")
    with pytest.raises(ValueError, match="no CPU kernel"):
        with planner.force(kernel="winograd"):
            pass
    with pytest.raises(ValueError, match="no ISA copy"):
        with planner.force(isa="sse9"):
            pass


def test_force_restores_and_nests():
    assert torch.ops.fastdw  # loaded
    before = fastdw.explain(torch.randn(1, 16, 8, 8), torch.randn(16, 1, 3, 3), padding=1)
    with planner.force(kernel="nhwc_pixels", isa="generic"):
        inner = fastdw.explain(torch.randn(1, 16, 8, 8), torch.randn(16, 1, 3, 3), padding=1)
        assert (inner.kernel, inner.isa, inner.source) == ("nhwc_pixels", "generic", "forced")
        with planner.force(kernel="fastdw"):
            own = fastdw.explain(torch.randn(1, 16, 8, 8), torch.randn(16, 1, 3, 3), padding=1)
            assert own.kernel != "aten" and own.isa == "generic"
        assert fastdw.backends.cpu.isa == "generic"
    after = fastdw.explain(torch.randn(1, 16, 8, 8), torch.randn(16, 1, 3, 3), padding=1)
    assert after == before


@pytest.mark.parametrize("dtype, onednn_check", [
    (torch.bfloat16, "_is_mkldnn_bf16_supported"), (torch.float16, "_is_mkldnn_fp16_supported")])
def test_aten_half_backward_input_only_through_onednn(dtype, onednn_check):
    """PyTorch's bfloat16/float16 backward-input accumulates in the dtype where it has no oneDNN
    path for the dtype (CPUs without AVX-512: 10-80 times fastdw's error bound): `aten` is no
    candidate there (forced: the rules' kernel, with the reason); its forward stays one."""
    x = torch.randn(2, 16, 9, 9, dtype=dtype)
    w = torch.randn(16, 1, 3, 3, dtype=dtype)
    with planner.force(kernel="aten"):
        fwd = fastdw.explain(x, w, padding=1)
        bwd = fastdw.explain(x, w, padding=1, pass_="bwd_input")
    assert fwd.kernel == "aten", fwd
    if getattr(torch.ops.mkldnn, onednn_check)():
        assert bwd.kernel == "aten", bwd
    else:
        assert bwd.kernel != "aten" and "accumulates in the dtype" in bwd.note, bwd


@pytest.mark.subprocess
def test_environment_overrides_are_read_at_import():
    code = ("import torch, fastdw\n"
            "p = fastdw.explain(torch.randn(1, 8, 6, 6), torch.randn(8, 1, 3, 3), padding=1)\n"
            "print(p.kernel, p.isa, p.source, fastdw.backends.cpu.benchmark)\n")
    env = dict(os.environ, FASTDW_CPU_KERNEL="nhwc_pixels", FASTDW_CPU_ISA="generic",
               FASTDW_CPU_BENCHMARK="1", FASTDW_CPU_PLAN_FILE="none")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["nhwc_pixels", "generic", "forced", "True"]


def test_benchmark_mode_measures_once_and_keeps_the_choice(no_cached_plans):
    cfg = Conv(2, 24, 13, 11, kh=5, kw=5, padding=(2, 2))
    x, w, b = cfg.make(dtype=torch.float32)
    assert fastdw.explain(x, w, **cfg.conv_args).source == "rules"
    fastdw.backends.cpu.benchmark = True
    check_against_reference(cfg, torch.float32, "nchw")  # tunes fwd, bwd_input, bwd_weight
    for pass_ in planner.PASSES:
        plan = fastdw.explain(x, w, pass_=pass_, **cfg.conv_args)
        assert plan.source == "tuned", plan
        prob = planner.problem(x, w, cfg.stride, cfg.padding, cfg.dilation, pass_)
        assert planner.unsupported(plan.kernel, prob) is None
    tuned = planner.cached_plans()
    assert len(tuned) >= 3 and all(e["best_us"] > 0 for e in tuned)
    y1 = fastdw.depthwise_conv2d(x, w, b, **cfg.conv_args)
    y2 = fastdw.depthwise_conv2d(x, w, b, **cfg.conv_args)
    assert torch.equal(y1, y2) and len(planner.cached_plans()) == len(tuned)
    # With benchmark mode off, measured plans give way to the rules again.
    fastdw.backends.cpu.benchmark = False
    assert fastdw.explain(x, w, **cfg.conv_args).source == "rules"
    # Own kernels only: tuned separately, never aten.
    fastdw.backends.cpu.benchmark = True
    with planner.force(kernel="fastdw"):
        fastdw.depthwise_conv2d(x, w, b, **cfg.conv_args)
        assert fastdw.explain(x, w, **cfg.conv_args).kernel != "aten"


def test_plan_file_round_trip(tmp_path, monkeypatch, no_cached_plans):
    path = str(tmp_path / "plans.json")
    monkeypatch.setenv("FASTDW_CPU_PLAN_FILE", path)
    assert planner.plan_file() == path
    cfg = Conv(1, 32, 10, 10)
    x, w, b = cfg.make(dtype=torch.float32, channels_last=True)
    prob = planner.problem(x, w, cfg.stride, cfg.padding, cfg.dilation, "fwd")
    # A plan file naming a kernel other than the rules' one is followed.
    ruled = planner.explain(x, w, **cfg.conv_args).kernel
    other = next(k for k in ("nhwc_pixels", "channel_blocks") if k != ruled)
    with open(path, "w") as f:
        json.dump({"machine": planner.machine_key(), "plans": [
            {"problem": list(prob), "isa": fastdw.backends.cpu.isa, "allow_aten": True,
             "kernel": other, "best_us": 1.0}]}, f)
    assert planner.load_plans() == 1
    plan = fastdw.explain(x, w, **cfg.conv_args)
    assert (plan.kernel, plan.source) == (other, "plan file")
    check_against_reference(cfg, torch.float32, "channels_last")
    # save_plans keeps the file's entries; another machine key loads nothing.
    planner.save_plans()
    assert planner.load_plans() == 1
    with open(path) as f:
        data = json.load(f)
    data["machine"]["torch"] = "0.0"
    with open(path, "w") as f:
        json.dump(data, f)
    planner.clear_plans()
    assert planner.load_plans() == 0
    assert fastdw.explain(x, w, **cfg.conv_args).source == "rules"
    planner.clear_plans(delete_file=True)
    assert not os.path.exists(path)


@pytest.mark.subprocess
def test_tune_command_writes_a_plan_file(tmp_path, no_cached_plans):
    from fastdw.cli import main
    path = str(tmp_path / "tuned.json")
    threads = torch.get_num_threads()
    try:
        assert main(["tune", "--suite", "seed", "--batch", "1", "--threads", "1", "--pass",
                     "fwd", "bwd_weight", "--layout", "channels_last", "--out", path]) == 0
    finally:
        torch.set_num_threads(threads)
    with open(path) as f:
        data = json.load(f)
    assert data["machine"] == planner.machine_key()
    assert data["plans"] and all(e["kernel"] in planner.kernels() for e in data["plans"])
    assert all(e["kernel"] != "aten" for e in data["plans"] if e["problem"][17] == "bwd_weight")
    # A later process loads the file at import.
    code = ("import fastdw\n"
            "print(sum(e['from_file'] for e in fastdw.planner.cached_plans()))\n")
    env = dict(os.environ, FASTDW_CPU_PLAN_FILE=path)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) == len(data["plans"]), out.stdout


def test_fma_rate_is_measured():
    rate = planner.fma_rate(0.02)
    assert 1e8 < rate < 1e14

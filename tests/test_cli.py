"""The command line (`python -m fastdw ...`) and the benchmark behind it: usage errors exit with
2, outputs parse, plots are PNGs, the parameter counts are the tutorial's, `check` passes on this
machine, and a provider whose outputs are wrong is marked FAIL and never timed."""
import csv
import json
import math
import os
import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

import fastdw
from fastdw.benchmark import bandwidth, providers, report
from fastdw.benchmark.runner import BenchConfig, run
from fastdw.benchmark.suites import Case, load_suite, suite_names
from fastdw.benchmark.timing import TimerConfig
from fastdw.cli import main

PNG = b"\x89PNG\r\n\x1a\n"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST_TIMER = TimerConfig(min_time=0.005, warmup=0.0, rounds=1)


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG


@pytest.mark.parametrize("argv", [
    [],
    ["frobnicate"],
    ["params", "256", "512"],
    ["params", "0", "512", "3"],
    ["params", "256", "x", "3"],
    ["bench", "--suite", "nosuch"],
    ["bench", "--batch", "0"],
    ["bench", "--pass", "sideways"],
    ["bench", "--dtype", "int8"],
    ["bench", "--layout", "nhwc"],
    ["bench", "--provider", "numpy"],
    ["bench", "--device", "tpu"],
    ["bench", "--min-time", "-1"],
    ["bench", "--json", "/no/such/folder/out.json"],
    ["compare", "--k", "4"],
    ["viz", "--image", "/no/such/image.png"],
    ["check", "--unknown-flag"],
], ids=lambda a: " ".join(a) or "no-command")
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--device", "cuda"])
    assert e.value.code == 2
    assert "no GPU" in capsys.readouterr().err


@pytest.mark.subprocess
def test_module_entry_point():
    """`python -m fastdw` itself: a good command exits 0, a bad one 2."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    ok = subprocess.run([sys.executable, "-m", "fastdw", "params", "256", "512", "3"],
                        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "1,179,648" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "fastdw", "bench", "--suite", "nosuch"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert bad.returncode == 2
    assert "invalid choice" in bad.stderr


def test_params_tutorial_numbers(capsys):
    assert main(["params", "256", "512", "3"]) == 0
    out = capsys.readouterr().out
    for number in ("1,179,648", "1,180,160",   # standard: weights, with bias
                   "2,304", "2,560",            # depthwise
                   "131,072", "131,584",        # pointwise
                   "133,376", "134,144",        # separable
                   "88.69%"):
        assert number in out, number
    assert main(["params", "256", "512", "3", "--json"]) == 0
    table = {r["type"]: r for r in json.loads(capsys.readouterr().out)}
    assert table["standard"]["weights"] == 1_179_648
    assert table["standard"]["with_bias"] == 1_180_160
    assert table["separable"]["weights"] == 133_376
    assert table["separable"]["with_bias"] == 2_304 + 256 + 131_072 + 512 == 134_144
    assert table["separable"]["reduction_pct"] == pytest.approx(100 * (1 - 133_376 / 1_179_648))


@pytest.mark.parametrize("c_in,c_out,k", [(1, 1, 1), (3, 64, 5), (32, 16, 7)])
def test_params_match_torch_modules(c_in, c_out, k, capsys):
    assert main(["params", str(c_in), str(c_out), str(k), "--json"]) == 0
    table = {r["type"]: r for r in json.loads(capsys.readouterr().out)}
    std = torch.nn.Conv2d(c_in, c_out, k, device="meta")
    assert table["standard"]["with_bias"] == sum(p.numel() for p in std.parameters())


def test_every_suite_loads():
    names = suite_names()
    for required in ("mobilenetv2", "efficientnet_b0", "convnext_t", "replknet31", "stress",
                     "seed", "separable"):
        assert required in names
    for name in names:
        suite = load_suite(name)
        assert suite.shapes and suite.select(quick=True)
        for s in suite.shapes:
            assert min(s.out_hw) > 0
    mb = load_suite("mobilenetv2")
    assert [(s.c, s.h, s.stride[0]) for s in mb.shapes][:3] == [(32, 112, 1), (96, 112, 2),
                                                               (144, 56, 1)]
    assert all(s.padding == (1, 1) for s in mb.shapes)


def test_traffic_bytes_and_flops():
    shape = load_suite("mobilenetv2").shapes[0]            # 32@112 k3 s1
    case = Case(shape, 8)
    x = y = 8 * 32 * 112 * 112
    assert bandwidth.traffic_bytes(case, "fwd", 4) == (x + 32 * 9 + 32 + y) * 4
    assert bandwidth.traffic_bytes(case, "bwd_input", 2) == (y + 32 * 9 + x) * 2
    assert bandwidth.traffic_bytes(case, "bwd_weight", 4) == (y + x + 32 * 9 + 32) * 4
    assert bandwidth.flops(case, "fwd") == 2 * y * 9
    assert bandwidth.flops(case, "fwd+bwd") == 3 * 2 * y * 9


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    paths = {k: str(folder / f"out.{k}") for k in ("json", "csv", "png")}
    argv = ["bench", "--quick", "--batch", "1", "--suite", "mobilenetv2", "separable",
            "--pass", "fwd", "bwd_weight", "fwd+bwd", "--min-time", "0.01", "--no-progress",
            "--json", paths["json"], "--csv", paths["csv"], "--plot", paths["png"]]
    return main(argv), paths


@pytest.mark.slow
def test_bench_quick_passes(quick_bench):
    code, _ = quick_bench
    assert code == 0


@pytest.mark.slow
def test_bench_json(quick_bench):
    _, paths = quick_bench
    with open(paths["json"]) as f:
        result = json.load(f)
    rows = result["rows"]
    # fastdw-cpu: the op as planned; fastdw-cpu-kernels: fastdw's own kernels only.
    assert {r["provider"] for r in rows} == {"torch", "fastdw-cpu", "fastdw-cpu-kernels"}
    assert {r["suite"] for r in rows} == {"mobilenetv2", "separable"}
    # separable shapes have no separate backward passes
    assert not [r for r in rows if r["kind"] == "separable" and r["pass"] == "bwd_weight"]
    for r in rows:
        assert r["status"] == "ok", r
        assert r["median_ms"] > 0 and r["lo_ms"] <= r["median_ms"] <= r["hi_ms"]
        assert r["gbps"] > 0 and r["pct_copy"] > 0 and r["err_bound"] <= 1
        if r["provider"] == "torch":
            assert r["backend"]                         # what PyTorch routed to
        elif r["kind"] == "depthwise":
            # the CPU kernel of each pass the row ran, by the planner's names
            kernels = r["backend"].split("/")
            assert len(kernels) == (3 if r["pass"] == "fwd+bwd" else 1), r
            assert set(kernels) <= set(fastdw.planner.kernels()), r
            if r["provider"] == "fastdw-cpu-kernels":
                assert "aten" not in kernels, r
        else:
            assert r["speedup"] == pytest.approx(
                next(t["median_ms"] for t in rows if t["provider"] == "torch"
                     and (t["shape"], t["layout"], t["pass"]) == (r["shape"], r["layout"],
                                                                  r["pass"])) / r["median_ms"])
    assert result["meta"]["copy_gbps"] > 0 and result["meta"]["device"] == "cpu"
    geo = [g for g in result["geomean"] if g["suite"] == "all" and g["pass"] == "fwd"]
    assert sorted(g["provider"] for g in geo) == ["fastdw-cpu", "fastdw-cpu-kernels"]
    assert all(math.isfinite(g["speedup"]) for g in geo)


@pytest.mark.slow
def test_bench_csv(quick_bench):
    _, paths = quick_bench
    with open(paths["json"]) as f:
        n_rows = len(json.load(f)["rows"])
    with open(paths["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n_rows
    assert set(report.CSV_FIELDS) == set(rows[0])
    assert all(float(r["median_ms"]) > 0 for r in rows)


@pytest.mark.slow
def test_bench_plot_is_png(quick_bench):
    assert _is_png(quick_bench[1]["png"])


@pytest.mark.slow
def test_bench_mismatch_is_fail_and_not_timed(monkeypatch):
    """A provider whose outputs are off is marked FAIL, carries the error, and is not timed."""
    build = providers.FastdwKernelProvider.build

    def wrong(self, case, pass_, t):
        fn = build(self, case, pass_, t)
        return lambda: tuple(o * 1.01 for o in fn())
    monkeypatch.setattr(providers.FastdwKernelProvider, "build", wrong)
    cfg = BenchConfig(suites=["mobilenetv2"], passes=["fwd", "bwd_input"], layouts=["nchw"],
                      batches=[1], quick=True, timer=FAST_TIMER, copy_bytes=1 << 20,
                      progress=False)
    result = run(cfg)
    mine = [r for r in result["rows"] if r["provider"] == "fastdw-cpu"]
    assert mine and all(r["status"] == "FAIL" for r in mine)
    assert all("median_ms" not in r and "beyond the error bound" in r["error"] for r in mine)
    assert all(r["status"] == "ok" and r["median_ms"] > 0
               for r in result["rows"] if r["provider"] == "torch")
    assert "FAIL" in report.table(result) and "FAIL" in report.summary(result)


def test_torch_backend_is_named():
    x, w = torch.randn(1, 8, 9, 9), torch.randn(8, 1, 3, 3)
    name = providers.torch_conv_backend(x, w, None, (1, 1), (1, 1), (1, 1))
    expected = "onednn" if (torch.backends.mkldnn.is_available()
                            and torch._C._get_mkldnn_enabled()) else "native-slow"
    assert name == expected
    assert providers.torch_conv_backend(x.double(), w.double(), None, (1, 1), (1, 1),
                                        (1, 1)) == "native-slow"


def test_check_passes_here(capsys):
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "fastdw-cpu: PASS" in out and "result: PASS" in out


def test_check_fails_on_a_wrong_kernel(monkeypatch, capsys):
    real = fastdw.depthwise_conv2d
    monkeypatch.setattr(fastdw, "depthwise_conv2d", lambda *a, **k: real(*a, **k) * 1.001)
    assert main(["check"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "result: FAIL" in out


def test_viz_synthetic_and_user_image(tmp_path, capsys):
    out = tmp_path / "features.png"
    assert main(["viz", "--out", str(out), "--size", "48", "--channels-out", "8"]) == 0
    assert _is_png(out)
    image = tmp_path / "in.png"
    rgb = np.zeros((20, 30, 3), dtype=np.float32)
    rgb[5:15, 10:20] = (1.0, 0.5, 0.0)
    mpimg.imsave(image, rgb)
    out2 = tmp_path / "features2.png"
    assert main(["viz", "--image", str(image), "--out", str(out2)]) == 0
    assert _is_png(out2)
    assert "in.png, 20x30" in capsys.readouterr().out


def test_compare_small(tmp_path, capsys):
    path = tmp_path / "compare.json"
    assert main(["compare", "--size", "24", "--c-in", "8", "--c-out", "16", "--min-time",
                 "0.01", "--json", str(path)]) == 0
    with open(path) as f:
        rows = json.load(f)["rows"]
    assert rows[0]["variant"] == "torch: standard conv" and rows[0]["params"] == 16 * 8 * 9 + 16
    assert all(r["status"] == "ok" and r["median_ms"] > 0 for r in rows)
    assert any(r["variant"].startswith("fastdw") for r in rows)
    assert "vs standard" in capsys.readouterr().out

"""fastdw.triton.variants: the Triton variants the launchers need, found and compiled for sm_90
without a GPU (issue 13). Each command runs in a child process: recording needs the interpreted
kernels, compiling the compiled ones, and a process has one or the other."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY_BENCH = ["--suite", "separable", "--quick", "--pass", "fwd", "fwd+bwd", "--dtype", "fp32",
              "--layout", "channels_last", "--batch", "3"]
FUSED_OPS = {"fastdw::depthwise_separable_conv2d",
             "fastdw::depthwise_separable_conv2d_backward_mid",
             "fastdw::depthwise_separable_conv2d_backward_pointwise"}


# Every test runs `python -m fastdw.triton.variants` or a check in a child interpreter.
pytestmark = pytest.mark.subprocess


def variants(*args, interpret: bool, timeout=900):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TRITON_INTERPRET", None)
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return subprocess.run([sys.executable, "-m", "fastdw.triton.variants", *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def suite_calls(tmp_path_factory):
    path = tmp_path_factory.mktemp("calls") / "suites.json"
    proc = variants("suites", path, *TINY_BENCH, interpret=True)
    assert proc.returncode == 0, proc.stderr
    return path


def test_suites_records_every_op_of_every_pass(suite_calls):
    """fwd and fwd+bwd of two channels_last shapes: the forward op for both passes (recorded
    once), the two backward ops for fwd+bwd, with the benchmark's batch and layout."""
    calls = json.loads(suite_calls.read_text())["calls"]
    assert {c["op"] for c in calls} == FUSED_OPS
    assert len(calls) == 2 * len(FUSED_OPS), [c["op"] for c in calls]
    x = calls[0]["args"][0]
    assert x["shape"][0] == 3 and x["stride"][1] == 1, "batch 3, channels_last"
    assert all(c["allow_tf32"] == [True] for c in calls), "as the benchmark runs (the default)"


def test_record_runs_the_program_and_keeps_its_exit_code(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(
        "import sys, torch, fastdw\n"
        "x = torch.randn(1, 4, 6, 5)\n"
        "w, pw = torch.randn(4, 1, 3, 3), torch.randn(7, 4, 1, 1)\n"
        "y = fastdw.depthwise_separable_conv2d(x, w, None, pw, None, padding=1, "
        "activation='gelu')\n"
        "sys.exit(3)\n")
    path = tmp_path / "calls.json"
    proc = variants("record", path, script, interpret=True)
    assert proc.returncode == 3, proc.stderr
    (call,) = json.loads(path.read_text())["calls"]
    assert call["op"] == "fastdw::depthwise_separable_conv2d"
    assert call["args"][0]["shape"] == [1, 4, 6, 5] and call["args"][2] is None
    assert call["args"][-1] == "gelu" and call["allow_tf32"] == [True, False]


def test_compile_for_sm90_without_a_gpu(suite_calls, tmp_path):
    """The forward kernel's variants for the tiny benchmark (every autotune config) compile with
    Triton's own compiler and ptxas; one needing more shared memory than sm_90 has would be
    reported as unusable. (CI's gpu_versions step compiles all three kernels.)"""
    data = json.loads(suite_calls.read_text())
    data["calls"] = [c for c in data["calls"] if c["op"] == "fastdw::depthwise_separable_conv2d"]
    forward_calls = tmp_path / "forward.json"
    forward_calls.write_text(json.dumps(data))
    report_path = tmp_path / "triton.json"
    proc = variants("compile", forward_calls, "--each", "cover", "--jobs", "2", "--json",
                    report_path, interpret=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(report_path.read_text())
    rows = report["variants"]
    assert report["arch"] == 90 and report["launches"] == 2, report
    assert len(rows) == report["cover"] <= report["combinations"] <= report["specializations"]
    assert {r["kernel"] for r in rows} == {"_sep_fwd_kernel"}
    configs = {(r["num_warps"], r["constexprs"]["BLOCK_P"], r["constexprs"]["BLOCK_CI"],
                r["constexprs"]["BLOCK_CO"]) for r in rows}
    assert len(configs) == report["configs"]["_sep_fwd_kernel"], "every autotune config"
    for r in rows:
        assert r["error"] is None and r["shared"] > 0, r
        assert bool(r["unusable"]) == (r["shared"] > 227 * 1024), r
    assert f"{len(rows)} compiled, 0 failed" in proc.stdout


def test_compile_fails_on_a_bad_call(tmp_path):
    """A call the launcher rejects fails the command (nothing is silently left out)."""
    path = tmp_path / "calls.json"
    bad = {"op": "fastdw::depthwise_separable_conv2d", "allow_tf32": [True],
           "args": [{"shape": [1, 4, 5, 5], "stride": [100, 25, 5, 1], "offset": 0,
                     "dtype": "float32"}, None, None, None, None, [1, 1], [0, 0], [1, 1],
                    "relu"]}
    path.write_text(json.dumps({"source": "test", "calls": [bad]}))
    proc = variants("compile", path, "--each", "cover", "--jobs", "1", interpret=False)
    assert proc.returncode != 0


def test_covering_set_covers(suite_calls):
    """The covering set holds every combination (less its config) and pairs every config of
    each kernel with every value that kernel is launched with; the one-wise set holds every
    config and every value."""
    check = f"""
import json
from fastdw.triton import variants as v
with v.target_driver(90):
    every = v.variants_for(v.launches_for(v.load_calls([{str(suite_calls)!r}])))
cover = v.covering(every)
def pairs(vs):
    return {{(x.kernel, c, k, val) for x in vs for c, vals in [x.config_and_values()]
             for k, val in vals.items()}}
assert pairs(cover) == pairs(every)
assert {{x.combination(False) for x in cover}} == {{x.combination(False) for x in every}}
assert len(cover) <= len(v.one_per_combination(every)) <= len(every)
def singles(vs):
    return {{(x.kernel, c) for x in vs for c, _ in [x.config_and_values()]}} | {{
        (x.kernel, k, val) for x in vs for val_map in [x.config_and_values()[1]]
        for k, val in val_map.items()}}
values = v.each_value(every)
assert singles(values) == singles(every) and len(values) <= len(cover)
print("covered", len(cover), "of", len(every), "; one-wise", len(values))
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0 and "covered" in proc.stdout, proc.stdout + proc.stderr

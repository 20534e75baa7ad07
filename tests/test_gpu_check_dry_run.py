"""bench/gpu_check.sh, the GPU machine's one script, run here as it would run there: its options,
its time budget, the files it leaves in $OUT and its summary (issue 13).

These runs stop before the build (a budget too small for it), so they take seconds; the whole
dry run, build included, is CI's step .ci/gpu_versions.sh. The device tool gives back at most 8
files from $OUT and the last 12,000 characters of output: every run here checks both.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.sh"
OUTPUT_TAIL = 12_000
MAX_OUT_FILES = 8
sys.path.insert(0, str(ROOT / "bench"))
import gpu_summary  # noqa: E402


def run_script(out: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, **env)
    return subprocess.run(["bash", str(SCRIPT), *args], env=full_env, capture_output=True,
                          text=True, timeout=600)


def steps_of(summary: str) -> dict:
    """{step: (state, seconds, cap)} from the summary's step table."""
    rows = re.findall(r"^(\w[\w-]*)\s+(ok|FAIL\(\d+\)|TIMEOUT|SKIP|NOTRUN)\s+(\d+)\s+(\d+)\s+\d*$",
                      summary, re.M)
    return {name: (state, int(secs), int(cap)) for name, state, secs, cap in rows}


def assert_comes_back_whole(proc: subprocess.CompletedProcess, out: Path) -> str:
    """The files fit what comes back, and the summary and verdict are in the output's tail."""
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= MAX_OUT_FILES, files
    summary = (out / "summary.md").read_text()
    tail = proc.stdout[-OUTPUT_TAIL:]
    assert summary.strip() in tail, "the summary is not within the tail the device tool returns"
    assert proc.stdout.rstrip().splitlines()[-1].startswith("gpu_check: ")
    return summary


def test_unknown_option_is_rejected(tmp_path):
    proc = run_script(tmp_path / "out", "--dry-run", "--bogus")
    assert proc.returncode == 2
    assert "unknown option --bogus" in proc.stderr
    assert not (tmp_path / "out").exists(), "nothing may run before the options are checked"


def test_help_lists_every_step():
    proc = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for step in ("versions", "build", "import", "tests", "triton", "check", "bench_dw",
                 "bench_sep", "extras", "sanitize", "--dry-run"):
        assert step in proc.stdout, step


def script_setting(name: str) -> str:
    return re.search(rf"^{name}=(\S+)", SCRIPT.read_text(), re.M).group(1)


def script_caps() -> dict:
    table = re.search(r"declare -A CAP=\(([^)]*)\)", SCRIPT.read_text()).group(1)
    return {k: int(v) for k, v in re.findall(r"\[(\w+)\]=(\d+)", table)}


def test_a_step_whose_cap_does_not_fit_is_skipped_and_reported(tmp_path):
    """Budget arithmetic, caps x1: a budget that holds the summary's reserve and the versions
    step (its cap plus the grace before a kill) but not the build's cap runs versions, skips
    build, and reports every later step as not run."""
    caps = script_caps()
    reserve, grace = int(script_setting("SUMMARY_RESERVE_S")), int(script_setting("KILL_AFTER_S"))
    budget = reserve + caps["versions"] + grace + 10
    assert budget - reserve - grace < caps["build"], "the build must not fit"
    out = tmp_path / "out"
    proc = run_script(out, "--dry-run", GPU_CHECK_BUDGET_S=str(budget), GPU_CHECK_CAP_SCALE="1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = assert_comes_back_whole(proc, out)
    steps = steps_of(summary)
    assert steps["versions"][2] == caps["versions"] and steps["versions"][0] in ("ok", "TIMEOUT")
    assert steps["build"] == ("SKIP", 0, caps["build"]), steps
    for later in ("tests", "check", "extras", "triton", "bench_dw", "bench_sep"):
        assert steps[later][0] == "NOTRUN", (later, steps)
    assert f"build: SKIPPED: its cap of {caps['build']}s does not fit" in proc.stdout
    assert f"budget {budget} s" in summary
    elapsed = int(re.search(rf"gpu_check: FAIL \(dry-run\) in (\d+)s of {budget}s",
                            proc.stdout).group(1))
    assert elapsed <= budget
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "summary.md"]


@pytest.mark.parametrize("states, rerun", [
    ({"tests": "ok", "check": "ok", "extras": "ok", "triton": "ok", "bench_dw": "SKIP",
      "bench_sep": "SKIP"}, "bash bench/gpu_check.sh --no-tests --no-extras"),
    ({"tests": "FAIL(1)", "check": "ok", "extras": "SKIP", "triton": "SKIP"},
     "bash bench/gpu_check.sh"),
    ({"tests": "ok", "check": "ok", "extras": "ok", "triton": "ok", "bench_dw": "ok",
      "bench_sep": "ok"}, None),
])
def test_summary_proposes_the_rerun_of_skipped_steps(states, rerun):
    steps = [f"{name}={state}:1:2:3" for name, state in states.items()]
    assert gpu_summary.rerun_line(steps) == rerun


def test_no_budget_runs_nothing_but_still_summarises(tmp_path):
    out = tmp_path / "out"
    proc = run_script(out, "--dry-run", "--sanitize", GPU_CHECK_BUDGET_S="1")
    assert proc.returncode == 1
    steps = steps_of(assert_comes_back_whole(proc, out))
    assert steps["versions"][0] == "SKIP" and steps["build"][0] == "SKIP"
    assert steps["sanitize"][0] == "NOTRUN"


def test_out_must_not_hold_other_files(tmp_path):
    """Only 8 files come back from the device machine: a file the script does not write would
    take a place, so the script refuses to start, and leaves it alone."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "summary.md").write_text("an earlier run's")
    proc = run_script(out, "--dry-run", GPU_CHECK_BUDGET_S="1")
    assert proc.returncode == 2
    assert "notes.txt" in proc.stderr
    assert (out / "notes.txt").read_text() == "mine"


def test_script_writes_at_most_eight_named_files():
    """The list of files the script may write is the one its check uses; it fits the limit."""
    text = SCRIPT.read_text()
    names = re.search(r"OUT_FILES=\(([^)]*)\)", text).group(1).split()
    assert len(names) <= MAX_OUT_FILES and re.search(r"MAX_OUT_FILES=8\b", text)
    for written in re.findall(r'"\$OUT/([\w.]+)"', text):
        assert written in names, written


def test_summary_drops_its_least_useful_parts_to_fit():
    sections = [(9, ["# head", "steps"]), (8, ["## tests: last lines"] + ["x" * 200] * 10),
                (5, ["## depthwise"] + ["y" * 100] * 40), (6, ["## separable"] + ["z" * 90] * 12)]
    text = gpu_summary._fit(sections, 4000)
    assert len(text) <= 4000
    assert "# head" in text and "## tests: last lines" in text and "## separable" in text
    assert "(depthwise: left out to fit; see the files)" in text


@pytest.mark.parametrize("n_lines", [1, 10_000])
def test_summary_of_failed_step_is_bounded(tmp_path, n_lines):
    excerpt = tmp_path / "tests.out"
    excerpt.write_text("\n".join(f"line {i} " + "z" * 500 for i in range(n_lines)))
    out = tmp_path / "out"
    out.mkdir()
    rc = gpu_summary.main(["--out", str(out), "--mode", "dry-run", "--budget", "360",
                           "--elapsed", "100", "--step", "tests=FAIL(1):50:120:70",
                           "--excerpt", f"tests={excerpt}"])
    text = (out / "summary.md").read_text()
    assert rc == 0 and len(text) <= gpu_summary.MAX_CHARS + 1
    assert f"line {n_lines - 1} " in text, "the last lines of a failed step are shown"
    assert steps_of(text)["tests"] == ("FAIL(1)", 50, 120)

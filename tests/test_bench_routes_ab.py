"""bench/cpu_routes_ab.py (the A/B behind the CPU routing rules) still runs: the seed suite's
depthwise layer (its separable one is skipped), every pass, one round, every route reported."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.subprocess
@pytest.mark.parametrize("which", ["fwd", "bwd_input", "bwd_weight"])
def test_cpu_routes_ab_runs(which):
    cmd = [sys.executable, os.path.join(ROOT, "bench", "cpu_routes_ab.py"), "--suite", "seed",
           "--batch", "1", "--rounds", "1", "--block-ms", "0.1", "--threads", "1",
           "--pass", which]
    env = {k: v for k, v in os.environ.items() if k != "FASTDW_CPU_BLOCKED"}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if "| 0:" in line]
    assert rows, result.stdout
    for route in ("0:", "1:", "direct:", "auto:"):
        assert all(route in row for row in rows)

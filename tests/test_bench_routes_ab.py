"""bench/cpu_routes_ab.py (the A/B behind the CPU planner's rules) still runs: the seed suite's
depthwise layer (its separable one is skipped), every pass, one round, every route reported
(a kernel that does not apply shows '-')."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.subprocess
@pytest.mark.parametrize("which", ["fwd", "bwd_input", "bwd_weight"])
def test_cpu_routes_ab_runs(which):
    cmd = [sys.executable, os.path.join(ROOT, "bench", "cpu_routes_ab.py"), "--suite", "seed",
           "--batch", "1", "--rounds", "1", "--min-time", "0.02", "--threads", "1",
           "--pass", which, "--isa", "generic", "avx2"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTDW_CPU_")}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if "| aten" in line]
    assert rows, result.stdout
    for route in ("aten:", "nchw_planes@generic:", "nhwc_pixels@avx2:", "channel_blocks@avx2:",
                  "planned ("):
        assert all(route in row for row in rows), (route, rows)

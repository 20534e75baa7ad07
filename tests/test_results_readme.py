"""bench/results/README.md is generated from the committed result files, and up to date."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.subprocess
def test_results_readme_is_generated_from_the_files():
    proc = subprocess.run([sys.executable, "bench/results_readme.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr

"""Child Python interpreters for the tests that need a fresh process: a CPU instruction set or a
Triton mode is chosen once per process, and a crash must not take the test run down with it.

Children run from the repository root with it on PYTHONPATH, so they import ``fastdw`` from this
tree and the shared ``tests.support`` modules (never a test module).
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child_env(**overrides: str) -> Dict[str, str]:
    """This process's environment with the repository root first on PYTHONPATH."""
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, **overrides)


def run_python(args: Sequence[str], env: Optional[Dict[str, str]] = None, stdin: str = None,
               timeout: float = 900) -> subprocess.CompletedProcess:
    """``python *args`` in a child interpreter (``["-c", code]`` runs code); captured text."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env or child_env(),
                          input=stdin, capture_output=True, text=True, timeout=timeout)


def run_pytest(test_file: str, deselect: str, env: Dict[str, str]) -> None:
    """Runs ``test_file``'s tests except those matching ``-k not deselect``; asserts they pass."""
    proc = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider",
                       os.path.abspath(test_file), "-k", f"not {deselect}"], env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

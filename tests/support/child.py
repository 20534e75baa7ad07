"""Child Python interpreters for the tests that need a fresh process: a CPU instruction set or a
Triton mode is chosen once per process, and a crash must not take the test run down with it.

Children run from the repository root with it on PYTHONPATH, so they import ``fastdw`` from this
tree and the shared ``tests.support`` modules (never a test module).
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from typing import Dict, Iterable, Optional, Sequence

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


# A child that checks depthwise configs against the reference (tests.support.reference_check)
# on one CPU instruction-set build; the configs arrive as JSON on stdin.
_CHECK_CONFIGS = """
import json, sys, torch
from fastdw import _C
from tests.support.configs import Conv
from tests.support.reference_check import check_against_reference
spec = json.load(sys.stdin)
assert _C.cpu_isa() == spec["isa"], _C.cpu_isa()
for fields in spec["configs"]:
    cfg = Conv(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    for layout in spec["layouts"]:
        for dtype in spec["dtypes"]:
            check_against_reference(cfg, getattr(torch, dtype), layout)
print("ok")
"""


def check_configs_on_isa(isa: str, configs: Iterable, dtypes: Sequence[str],
                         layouts: Sequence[str] = ("nchw", "channels_last"),
                         **env: str) -> None:
    """``check_against_reference`` for every config, layout and dtype (names such as
    'float32') in a child whose FASTDW_CPU_ISA is ``isa``; extra ``env`` variables too (e.g.
    FASTDW_CPU_BLOCKED). Asserts the child ran them all."""
    spec = dict(isa=isa, configs=[dataclasses.asdict(c) for c in configs], dtypes=list(dtypes),
                layouts=list(layouts))
    proc = run_python(["-c", _CHECK_CONFIGS], env=child_env(FASTDW_CPU_ISA=isa, **env),
                      stdin=json.dumps(spec))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]

"""The CPU kernels' ISA copies as test parameters. Every copy is a parameter; those that are
neither the baseline (generic) nor the copy this CPU runs are marked ``other_isa``, so the fast
tier checks the code that runs here and the portable one, and ``make test`` all of them."""
import pytest

import fastdw
from fastdw import planner


def supported() -> list:
    """The copies this CPU can run."""
    return [name for name, ok in planner.isas().items() if ok]


def params() -> list:
    """``pytest.param`` per ISA copy, ``other_isa`` on the ones described above."""
    running = fastdw.backends.cpu.isa
    return [pytest.param(name, marks=() if name in ("generic", running) else pytest.mark.other_isa)
            for name in planner.isas()]

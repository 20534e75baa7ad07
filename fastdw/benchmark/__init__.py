"""fastdw's benchmark: shape suites (package data), providers, float64 verification, timing,
bandwidth accounting and reports. ``python -m fastdw bench`` is its command line."""
from .runner import BenchConfig, run
from .suites import load_suite, suite_names

__all__ = ["BenchConfig", "run", "load_suite", "suite_names"]

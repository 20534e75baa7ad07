"""Timers: device events through ``triton.testing.do_bench`` on GPU, ``torch.utils.benchmark``
on CPU. Both warm up first and report a median with a spread, never a single host-clock read."""
from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch


@dataclasses.dataclass(frozen=True)
class Timing:
    median_ms: float
    lo_ms: float   # 20th percentile on GPU (do_bench), 25th on CPU
    hi_ms: float   # 80th percentile on GPU (do_bench), 75th on CPU
    runs: int
    # CPU: the median of each interleaved round, in round order (a ratio of two functions is
    # steadiest as the median of per-round ratios); empty on GPU.
    round_medians_ms: Tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class TimerConfig:
    """CPU: ``min_time`` seconds of measurement per function, in ``rounds`` interleaved
    rounds, after ``warmup`` seconds of calls.
    GPU: ``rep_ms`` and ``warmup_ms`` for do_bench."""
    min_time: float = 0.3
    warmup: float = 0.05
    rounds: int = 3
    rep_ms: float = 40.0
    warmup_ms: float = 10.0


def describe(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"timer": "triton.testing.do_bench (CUDA events, L2 flushed between runs)",
                "quantiles": "median, lo=p20, hi=p80"}
    return {"timer": "torch.utils.benchmark.Timer.blocked_autorange, providers interleaved "
                     "in rounds",
            "quantiles": "median, lo=p25, hi=p75 (IQR) of blocks"}


def _quartiles(values):
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q2, q1, q3


def _torch_benchmark():
    # Importing torch.utils.benchmark imports torch.utils.cpp_extension, which warns about a
    # missing CUDA runtime on CPU-only machines: noise in a benchmark's output.
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils import benchmark
    finally:
        log.setLevel(level)
    return benchmark


def time_cpu_group(fns: Dict[str, Callable[[], object]], cfg: TimerConfig) -> Dict[str, Timing]:
    """Times several functions that compete on the same CPU, interleaved: ``cfg.rounds``
    rounds, each giving every function a ``blocked_autorange`` of ``min_time / rounds``
    seconds (in rotating order), so load from other processes falls on all of them alike.
    Median and quartiles are over all blocks of all rounds."""
    benchmark = _torch_benchmark()
    names = list(fns)
    for name in names:   # warm-up: first-call allocations, oneDNN primitive creation
        end = time.perf_counter() + cfg.warmup
        fns[name]()
        while time.perf_counter() < end:
            fns[name]()
    timers = {name: benchmark.Timer(stmt="fn()", globals={"fn": fns[name]},
                                    num_threads=torch.get_num_threads()) for name in names}
    blocks: Dict[str, List[float]] = {name: [] for name in names}
    round_medians: Dict[str, List[float]] = {name: [] for name in names}
    runs = dict.fromkeys(names, 0)
    rounds = max(1, cfg.rounds)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            m = timers[name].blocked_autorange(min_run_time=cfg.min_time / rounds)
            blocks[name] += [t * 1e3 for t in m.times]
            round_medians[name].append(m.median * 1e3)
            runs[name] += len(m.times) * m.number_per_run
    out = {}
    for name in names:
        med, lo, hi = _quartiles(blocks[name])
        out[name] = Timing(med, lo, hi, runs[name], tuple(round_medians[name]))
    return out


def _time_cuda_events(fn, cfg: TimerConfig) -> Timing:
    """Fallback when Triton is missing: CUDA events around each call, after warm-up."""
    fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    stop = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        fn()
    stop.record()
    torch.cuda.synchronize()
    estimate = max(start.elapsed_time(stop) / 5, 1e-3)
    for _ in range(max(1, int(cfg.warmup_ms / estimate))):
        fn()
    times = []
    for _ in range(max(5, int(cfg.rep_ms / estimate))):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    med, lo, hi = _quartiles(times)
    return Timing(med, lo, hi, len(times))


def time_cuda(fn: Callable[[], object], cfg: TimerConfig) -> Timing:
    try:
        from triton.testing import do_bench
    except ImportError:
        return _time_cuda_events(fn, cfg)
    med, lo, hi = do_bench(fn, warmup=cfg.warmup_ms, rep=cfg.rep_ms, quantiles=[0.5, 0.2, 0.8])
    # do_bench does not say how many runs it made; estimate from the median.
    return Timing(med, lo, hi, max(1, int(cfg.rep_ms / max(med, 1e-6))))


def time_group(fns: Dict[str, Callable[[], object]], device: torch.device, cfg: TimerConfig
               ) -> Dict[str, Timing]:
    """Times each function of ``fns`` on ``device`` (on CPU interleaved, ``time_cpu_group``)."""
    if device.type == "cuda":
        return {name: time_cuda(fn, cfg) for name, fn in fns.items()}
    return time_cpu_group(fns, cfg)

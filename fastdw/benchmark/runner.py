"""Runs a benchmark: for every case, dtype, layout, pass and provider, check the provider's
outputs against the float64 reference, then (only if they match) time it."""
from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

from . import bandwidth, timing
from .providers import OUTPUTS, all_providers, make_tensors, to_layout
from .report import geomean
from .suites import Case, cases, load_suite
from .verify import Reference, rounded_to
from ..planner import cpu_model

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
          "fp64": torch.float64}
LAYOUTS = ("nchw", "channels_last")


@dataclasses.dataclass
class BenchConfig:
    suites: Sequence[str] = ("mobilenetv2",)
    passes: Sequence[str] = ("fwd", "fwd+bwd")
    dtypes: Sequence[str] = ("fp32",)
    layouts: Sequence[str] = LAYOUTS
    batches: Optional[Sequence[int]] = None   # None: 8 on CPU, 32 on GPU
    providers: Optional[Sequence[str]] = None  # None: every available one
    device: str = "auto"
    quick: bool = False
    timer: timing.TimerConfig = dataclasses.field(default_factory=timing.TimerConfig)
    copy_bytes: Optional[int] = None           # None: 256 MiB on CPU, 1 GiB on GPU
    seed: int = 0
    cudnn_benchmark: bool = True
    progress: Optional[bool] = None            # None: when stderr is a terminal
    reference_max_bytes: int = 2 << 30


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name: str) -> torch.device:
    return default_device() if name == "auto" else torch.device(name)


def default_batches(device: torch.device) -> List[int]:
    return [32] if device.type == "cuda" else [8]


def _load() -> Optional[float]:
    """The 1-minute load average (other processes compete for the CPU the timings use)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def busy_elsewhere(window: float = 0.5) -> Optional[float]:
    """CPUs' worth of time the rest of the machine used during a short window in which this
    process sleeps (Linux /proc/stat). Unlike the load average, which trails by a minute (the
    build that just finished counts), this is what competes with the timings now."""
    def busy_jiffies():
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
        return sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    try:
        before = busy_jiffies()
        time.sleep(window)
        after = busy_jiffies()
        return round((after - before) / os.sysconf("SC_CLK_TCK") / window, 2)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def environment(device: torch.device) -> Dict:
    """Versions and machine facts recorded with every result."""
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model(),
        "load_average": _load(),
        "busy_elsewhere": busy_elsewhere() if device.type == "cpu" else None,
        "onednn_enabled": bool(torch.backends.mkldnn.is_available()
                               and torch._C._get_mkldnn_enabled()),
    }
    try:
        import fastdw
        info["fastdw"] = fastdw.__version__
    except ImportError as e:
        info["fastdw"] = f"unavailable: {e}"
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cpu":
        from .. import planner
        info.update(cpu_isa=planner.CpuBackend().isa,
                    cpu_benchmark_mode=planner.CpuBackend().benchmark,
                    cpu_plan_file=planner.plan_file(), cpu_cached_plans=len(planner.cached_plans()))
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, sm_count=props.multi_processor_count,
                    capability=f"{props.major}.{props.minor}",
                    cudnn=torch.backends.cudnn.version(),
                    cudnn_benchmark=torch.backends.cudnn.benchmark,
                    cudnn_allow_tf32=torch.backends.cudnn.allow_tf32)
    else:
        info["device_name"] = info["cpu"]
    return info


def output_names(case: Case, pass_: str):
    names = OUTPUTS[(case.shape.kind, pass_)]
    if pass_ == "fwd+bwd" and not case.shape.bias:
        names = tuple(n for n in names if n != "grad_bias")
    return names


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(fn, device) -> Optional[float]:
    """Memory a call allocates beyond what is already held, in MiB (CUDA only)."""
    if device.type != "cuda":
        return None
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    out = fn()
    _sync(device)
    del out
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def _run_pass(case: Case, pass_: str, dtype_name: str, layout: str, t, ref: Reference,
              provs, device, cfg: BenchConfig, roof: "Roof") -> List[Dict]:
    """One row per provider for one (case, dtype, layout, pass): check each provider against
    the reference, then time together the ones whose outputs matched."""
    dtype = DTYPES[dtype_name]
    names = output_names(case, pass_)
    rounded = rounded_to(case, dtype, device)
    nbytes = bandwidth.traffic_bytes(case, pass_, torch.empty((), dtype=dtype).element_size())
    torch_err: Dict[str, float] = {}
    group, fns = [], {}
    for prov in provs:   # torch first: its error is known before the others are judged
        row = dict(_case_fields(case), dtype=dtype_name, layout=layout, **{"pass": pass_},
                   provider=prov.name, device=device.type, status="ok", error="", backend="",
                   rel_err=None, err_bound=None, bytes=nbytes, flops=bandwidth.flops(case, pass_))
        group.append(row)
        try:
            fn = prov.build(case, pass_, t)
            outs = fn()
            _sync(device)
            # After the first call: with benchmark mode on, that call chose the CPU kernels.
            row["backend"] = prov.backend(case, t, pass_)
            errs = ref.compare(names, outs, dtype, rounded)
            del outs
        except Exception as e:  # noqa: BLE001 - recorded in the row
            row.update(status="ERROR", error=f"{type(e).__name__}: {e}"[:300])
            continue
        row["rel_err"] = max(e.rel_l2 for e in errs.values())
        row["err_bound"] = max(e.worst for e in errs.values())
        # Judged by fastdw.accuracy's bound, or against twice PyTorch's own error in the same
        # dtype where PyTorch itself is less accurate than that.
        bad = [k for k, e in errs.items() if not e.ok(max(1.0, 2 * torch_err.get(k, 0.0)))]
        if prov.name == "torch":
            torch_err = {k: e.worst for k, e in errs.items()}
        if bad:
            e = errs[bad[0]]
            row.update(status="FAIL", error=(
                f"{bad[0]}: {e.off} elements beyond the error bound (worst |error| / bound "
                f"{e.worst:.3g}, relative L2 error {e.rel_l2:.3g}); {e.detail}"))
        else:
            fns[prov.name] = fn
    _time_rows(group, fns, device, cfg.timer, roof)
    return group


@dataclasses.dataclass(frozen=True)
class Roof:
    """The machine's limits, calibrated in the same run as the timings: copy bandwidth (GB/s,
    bytes read + written) and, on the CPU, the float32 multiply-add rate (per second, all
    threads; None elsewhere). A pass cannot take less than max(bytes / bandwidth, multiply-adds
    / rate): its share of that limit is the roofline column."""
    copy_gbps: float
    fma_per_s: Optional[float]

    def limit_ms(self, nbytes: int, flops: int) -> Optional[float]:
        if self.fma_per_s is None:
            return None
        return 1e3 * max(nbytes / (self.copy_gbps * 1e9), (flops / 2) / self.fma_per_s)


def _time_rows(group, fns, device, timer_cfg, roof: Roof):
    """Times the providers that passed their check, together, and fills in their rows."""
    if not fns:
        return
    try:
        timings = timing.time_group(fns, device, timer_cfg)
    except Exception as e:  # noqa: BLE001
        for r in group:
            if r["provider"] in fns:
                r.update(status="ERROR", error=f"timing: {type(e).__name__}: {e}"[:300])
        return
    for r in group:
        tm = timings.get(r["provider"])
        if tm is None:
            continue
        sec = tm.median_ms * 1e-3
        r.update(median_ms=tm.median_ms, lo_ms=tm.lo_ms, hi_ms=tm.hi_ms, runs=tm.runs,
                 peak_mb=_peak_mb(fns[r["provider"]], device), gbps=r["bytes"] / sec / 1e9,
                 gflops=r["flops"] / sec / 1e9)
        r["pct_copy"] = 100.0 * r["gbps"] / roof.copy_gbps
        limit = roof.limit_ms(r["bytes"], r["flops"])
        r["roof_ms"] = limit
        r["pct_roof"] = None if limit is None else 100.0 * limit / tm.median_ms
    base = timings.get("torch")
    for r in group:
        if base is not None and r["provider"] in timings:
            r["speedup"] = base.median_ms / r["median_ms"]


def _case_fields(case: Case) -> Dict:
    s = case.shape
    return {"suite": s.suite, "kind": s.kind, "shape": s.label, "n": case.n, "c": s.c,
            "c_out": s.channels_out, "h": s.h, "w": s.w, "kh": s.kh, "kw": s.kw, "m": s.m,
            "stride": list(s.stride), "padding": list(s.padding), "dilation": list(s.dilation),
            "activation": s.activation}


def run(cfg: BenchConfig, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)
        ) -> Dict:
    """Runs the benchmark described by ``cfg``; returns ``{"meta", "providers", "rows",
    "geomean", "skipped"}`` (rows are plain dicts, ready for JSON or CSV)."""
    from tqdm.auto import tqdm

    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    batches = list(cfg.batches or default_batches(device))
    suites = [load_suite(name) for name in cfg.suites]
    todo, skipped = cases(suites, batches, device.type, cfg.quick)

    known = all_providers()
    wanted = list(cfg.providers or known)
    provider_info, providers = {}, []
    for name in wanted:
        ok, why = known[name].availability(device)
        provider_info[name] = {"available": ok, "why": why,
                               "description": known[name].description}
        if ok:
            providers.append(known[name])
        elif cfg.providers:   # asked for by name: say why it is left out
            log(f"note: provider {name} unavailable: {why}")
    if "torch" not in [p.name for p in providers]:
        providers.append(known["torch"])   # the baseline every speedup is against
        provider_info.setdefault("torch", {"available": True, "why": "baseline",
                                           "description": known["torch"].description})
    providers.sort(key=lambda p: p.name != "torch")

    def timer(fns):
        return timing.time_group(fns, device, cfg.timer)
    copy_bytes = cfg.copy_bytes or ((1 << 30) if device.type == "cuda" else (256 << 20))
    copy_gbps = bandwidth.copy_bandwidth(device, timer, copy_bytes)
    fma_per_s = None
    if device.type == "cpu":
        from .. import planner
        fma_per_s = planner.fma_rate(0.05 if cfg.quick else 0.3)
    roof = Roof(copy_gbps, fma_per_s)

    def plan(case):
        passes = [p for p in cfg.passes if p in bandwidth.PASSES_BY_KIND[case.shape.kind]]
        provs = [p for p in providers if case.shape.kind in p.kinds]
        return passes, provs

    total = sum(len(cfg.dtypes) * len(cfg.layouts) * len(pa) * len(pr)
                for pa, pr in map(plan, todo))
    rows: List[Dict] = []
    bar = tqdm(total=total, desc="fastdw bench", unit="run", file=sys.stderr,
               disable=(None if cfg.progress is None else not cfg.progress), leave=False)
    for case in todo:
        passes, provs = plan(case)
        if not passes or not provs:
            continue
        need_grads = any(p != "fwd" for p in passes)
        for dtype_name in cfg.dtypes:
            base = make_tensors(case, DTYPES[dtype_name], device, cfg.seed)
            ref = Reference(case, base, need_grads, cfg.reference_max_bytes)
            for layout in cfg.layouts:
                t = to_layout(base, layout)
                for pass_ in passes:
                    bar.set_postfix_str(f"{case.shape.suite} {case.shape.label} {dtype_name} "
                                        f"{layout} {pass_}", refresh=False)
                    group = _run_pass(case, pass_, dtype_name, layout, t, ref, provs, device,
                                      cfg, roof)
                    bar.update(len(group))
                    rows.extend(group)
            del base, ref, t
            if device.type == "cuda":
                torch.cuda.empty_cache()
    bar.close()

    meta = dict(environment(device), **timing.describe(device),
                timer_config=dataclasses.asdict(cfg.timer), copy_gbps=copy_gbps,
                fma_per_s=fma_per_s,
                copy_bytes=copy_bytes, suites=list(cfg.suites), passes=list(cfg.passes),
                dtypes=list(cfg.dtypes), layouts=list(cfg.layouts), batches=batches,
                quick=cfg.quick, seed=cfg.seed,
                date=datetime.datetime.now().isoformat(timespec="seconds"),
                bytes_note="minimal traffic: each input read once, each output written once",
                argv=sys.argv)
    return {"meta": meta, "providers": provider_info, "rows": rows,
            "geomean": summarize(rows), "skipped": skipped}


def summarize(rows: Sequence[Dict]) -> List[Dict]:
    """Geometric-mean speedup over torch per (provider, suite, dtype, layout, pass), then per
    (provider, pass) over everything; with counts of rows that failed or errored."""
    groups: Dict[tuple, List[Dict]] = {}
    for r in rows:
        if r["provider"] == "torch":
            continue
        groups.setdefault((r["provider"], r["suite"], r["dtype"], r["layout"], r["pass"]),
                          []).append(r)
        groups.setdefault((r["provider"], "all", "all", "all", r["pass"]), []).append(r)
    out = []
    for (prov, suite, dtype, layout, pass_), rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        out.append({"provider": prov, "suite": suite, "dtype": dtype, "layout": layout,
                    "pass": pass_, "speedup": geomean([r.get("speedup") for r in ok]),
                    "pct_copy": geomean([r.get("pct_copy") for r in ok]),
                    "pct_roof": geomean([r.get("pct_roof") for r in ok]),
                    "rows": len(rs), "failed": len(rs) - len(ok)})
    return out

"""Benchmark results as a terminal table, JSON, CSV and a plot."""
from __future__ import annotations

import csv
import json
import math
from typing import Dict, List, Optional, Sequence

CSV_FIELDS = ("suite", "kind", "shape", "n", "c", "c_out", "h", "w", "kh", "kw", "m", "stride",
              "padding", "dilation", "activation", "dtype", "layout", "pass", "provider",
              "backend", "device", "status", "median_ms", "lo_ms", "hi_ms", "runs", "bytes",
              "flops", "gbps", "pct_copy", "roof_ms", "pct_roof", "gflops", "speedup", "peak_mb",
              "rel_err", "err_bound", "error")
_LAYOUT_SHORT = {"nchw": "nchw", "channels_last": "cl"}


def _fmt(v, spec, empty="-"):
    return empty if v is None else format(v, spec)


def _ms(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" if v < 1 else f"{v:.3f}" if v < 100 else f"{v:.1f}"


def _providers_in(rows) -> List[str]:
    seen: List[str] = []
    for r in rows:
        if r["provider"] not in seen:
            seen.append(r["provider"])
    return sorted(seen, key=lambda p: p != "torch")


def header(result: Dict) -> str:
    m = result["meta"]
    lines = [f"fastdw bench on {m['device']} ({m['device_name']}), torch {m['torch']}, "
             f"fastdw {m['fastdw']}, triton {m.get('triton')}, {m['threads']} CPU threads",
             f"timer: {m['timer']}; {m['quantiles']}; copy bandwidth {m['copy_gbps']:.1f} GB/s "
             f"(copy of {m['copy_bytes'] >> 20} MiB, bytes read + written)"
             + (f"; multiply-add rate {m['fma_per_s'] / 1e9:.1f} G/s (float32, all threads)"
                if m.get("fma_per_s") else "")]
    if m["device"] == "cpu" and "cpu_isa" in m:
        lines.append(f"CPU kernels: ISA copy {m['cpu_isa']}, benchmark mode "
                     f"{'on' if m['cpu_benchmark_mode'] else 'off'}, {m['cpu_cached_plans']} "
                     f"plans from {m['cpu_plan_file'] or 'no plan file'}; %roof = share of the "
                     "limit max(bytes / copy bandwidth, multiply-adds / multiply-add rate)")
    busy, load, cores = m.get("busy_elsewhere"), m.get("load_average"), m.get("cpu_count")
    if m["device"] == "cpu" and busy is not None:
        if busy > 0.25:
            lines.append(f"warning: other processes were using {busy} of {cores} CPUs at the "
                         "start: they compete with the timings; expect noisy times (spread "
                         "marked *); --threads 1 suffers less from it")
    elif m["device"] == "cpu" and load is not None and cores and load > 0.75 * cores:
        lines.append(f"warning: load average {load} on {cores} cores at the start: other "
                     "processes compete for the CPU; expect noisy times (spread marked *); "
                     "--threads 1 suffers less from it")
    for name, info in result["providers"].items():
        state = "yes" if info["available"] else "no "
        lines.append(f"  provider {name:14s} {state}  {info['why']}")
    for note in result.get("skipped", []):
        lines.append(f"  skipped: {note}")
    return "\n".join(lines)


def geomean(values: Sequence[Optional[float]]) -> Optional[float]:
    """Geometric mean of the positive values (None and non-positive ones are left out)."""
    values = [v for v in values if v and v > 0]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


NOISE = 0.25


def noisy(r: Dict) -> bool:
    """Whether a timing's spread (IQR on CPU, p20-p80 on GPU) exceeds NOISE of its median."""
    return r.get("median_ms") is not None and (r["hi_ms"] - r["lo_ms"]) > NOISE * r["median_ms"]


def _share(r: Dict) -> str:
    """The row's share of the roofline limit (CPU), else of the copy bandwidth."""
    key = "pct_roof" if r.get("pct_roof") is not None else "pct_copy"
    return _fmt(r.get(key), ".0f") + "%"


def _cells(r: Optional[Dict], baseline: bool) -> List[str]:
    if r is None:
        return ["", "", "", "", ""]
    if r["status"] != "ok":
        return ["FAIL" if r["status"] == "FAIL" else "ERROR", "", "", "", ""]
    last = "" if baseline else _fmt(r.get("speedup"), ".2f") + "x"
    return [_ms(r["median_ms"]) + ("*" if noisy(r) else ""), _fmt(r.get("gbps"), ".1f"),
            _share(r), last, r.get("backend") or ""]


def table(result: Dict) -> str:
    """One section per (suite, dtype); one line per (shape, batch, layout, pass) with each
    provider's median time, GB/s, share of the roofline limit (%roof, CPU; % of copy bandwidth
    elsewhere), speedup over torch, and the backend that ran (PyTorch's pick; fastdw's CPU
    kernels per pass); geomean lines close each section."""
    rows = result["rows"]
    provs = _providers_in(rows)
    out: List[str] = []
    sections: Dict[tuple, List[Dict]] = {}
    for r in rows:
        sections.setdefault((r["suite"], r["dtype"]), []).append(r)
    head = ["shape", "N", "layout", "pass"]
    sub = ["", "", "", ""]
    roof = any(r.get("pct_roof") is not None for r in rows)
    for p in provs:
        head += [p, "", "", "", ""]
        sub += ["ms", "GB/s", "%roof" if roof else "%copy", "" if p == "torch" else "vs torch",
                "backend"]
    for (suite, dtype), rs in sections.items():
        lines = [head, sub]
        keyed: Dict[tuple, Dict[str, Dict]] = {}
        for r in rs:
            keyed.setdefault((r["shape"], r["n"], r["layout"], r["pass"]), {})[r["provider"]] = r
        for (shape, n, layout, pass_), by in keyed.items():
            line = [shape, str(n), _LAYOUT_SHORT.get(layout, layout), pass_]
            for p in provs:
                line += _cells(by.get(p), p == "torch")
            lines.append(line)
        for g in result["geomean"]:
            if g["suite"] == suite and g["dtype"] == dtype:
                line = ["geomean", "", _LAYOUT_SHORT.get(g["layout"], g["layout"]), g["pass"]]
                for p in provs:
                    if p == g["provider"]:
                        line += ["", "", _share(g), _fmt(g["speedup"], ".2f") + "x", ""]
                    else:
                        line += ["", "", "", "", ""]
                lines.append(line)
        widths = [max(len(l[i]) for l in lines) for i in range(len(head))]
        out.append(f"== {suite} | {dtype} ==")
        for i, l in enumerate(lines):
            cells = [c.ljust(w) if j < 4 or (j - 4) % 5 == 4 else c.rjust(w)
                     for j, (c, w) in enumerate(zip(l, widths))]
            out.append("  ".join(cells).rstrip())
            if i == 1:
                out.append("-" * len(out[-1]))
        out.append("")
    if any(noisy(r) for r in rows):
        out.append(f"* spread over {NOISE:.0%} of the median: the machine was busy; read that "
                   "time with care.\n")
    return "\n".join(out)


def summary(result: Dict) -> str:
    """Overall geomean speedups and every failure, in a few lines."""
    lines = []
    overall = [g for g in result["geomean"] if g["suite"] == "all"]
    for g in overall:
        lines.append(f"geomean speedup of {g['provider']} over torch, {g['pass']}: "
                     f"{_fmt(g['speedup'], '.2f')}x over {g['rows'] - g['failed']} cases, "
                     f"{_fmt(g['pct_copy'], '.0f')}% of copy bandwidth"
                     + (f", {_fmt(g['pct_roof'], '.0f')}% of the roofline limit"
                        if g.get("pct_roof") else "")
                     + (f", {g['failed']} FAILED" if g["failed"] else ""))
    for r in result["rows"]:
        if r["status"] != "ok":
            lines.append(f"{r['status']}: {r['provider']} {r['suite']} {r['shape']} N={r['n']} "
                         f"{r['dtype']} {r['layout']} {r['pass']}: {r['error']}")
    return "\n".join(lines)


def write_json(result: Dict, path: str) -> None:
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v
    rows = [{k: clean(v) for k, v in r.items()} for r in result["rows"]]
    with open(path, "w") as f:
        json.dump(dict(result, rows=rows), f, indent=1, default=str)
        f.write("\n")


def write_csv(result: Dict, path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in result["rows"]:
            w.writerow({k: ("x".join(map(str, v)) if isinstance(v, list) else v)
                        for k, v in r.items()})


def _speedup_entries(result: Dict, limit: int = 80):
    """(label, provider, speedup) per case, or per geomean group when there are too many."""
    rows = [r for r in result["rows"] if r["provider"] != "torch" and r.get("speedup")]
    if len(rows) <= limit:
        return [(f"{r['shape']} N{r['n']} {r['dtype']} {_LAYOUT_SHORT[r['layout']]} {r['pass']}",
                 r["provider"], r["speedup"]) for r in rows], "per case"
    return [(f"{g['suite']} {g['dtype']} {_LAYOUT_SHORT[g['layout']]} {g['pass']}",
             g["provider"], g["speedup"]) for g in result["geomean"]
            if g["suite"] != "all" and g["speedup"]], "geomean per suite/dtype/layout/pass"


def plot(result: Dict, path: str) -> None:
    """Left: speedup over torch per case (bars; 1x marked). Right: achieved GB/s against
    arithmetic intensity for every provider, under the measured copy bandwidth (roofline-ish)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries, what = _speedup_entries(result)
    labels = list(dict.fromkeys(e[0] for e in entries))
    provs = list(dict.fromkeys(e[1] for e in entries))
    height = max(4.0, 0.22 * len(labels) * max(1, len(provs)) + 1.5)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, min(height, 60)),
                                   gridspec_kw={"width_ratios": [1.2, 1]})
    bar_h = 0.8 / max(1, len(provs))
    for i, prov in enumerate(provs):
        vals = {e[0]: e[2] for e in entries if e[1] == prov}
        ys = [j + i * bar_h for j, l in enumerate(labels) if l in vals]
        ax1.barh(ys, [vals[l] for l in labels if l in vals], height=bar_h, label=prov)
    ax1.axvline(1.0, color="k", lw=1, ls="--")
    ax1.set_yticks([j + bar_h * (len(provs) - 1) / 2 for j in range(len(labels))])
    ax1.set_yticklabels(labels, fontsize=7)
    ax1.invert_yaxis()
    ax1.set_xscale("log")
    ax1.set_xlabel("speedup over torch (median time ratio; log scale)")
    ax1.set_title(f"speedup over torch ({what})")
    if provs:
        ax1.legend(loc="lower right", fontsize=8)

    copy = result["meta"]["copy_gbps"]
    markers = {"fwd": "o", "bwd_input": "s", "bwd_weight": "^", "fwd+bwd": "D"}
    for prov in _providers_in(result["rows"]):
        for pass_, mk in markers.items():
            rs = [r for r in result["rows"] if r["provider"] == prov and r["pass"] == pass_
                  and r["status"] == "ok"]
            if rs:
                ax2.scatter([r["flops"] / r["bytes"] for r in rs], [r["gbps"] for r in rs],
                            marker=mk, s=18, alpha=0.75, label=f"{prov} {pass_}")
    ax2.axhline(copy, color="k", lw=1, ls="--")
    ax2.text(0.02, copy, f" copy {copy:.0f} GB/s", va="bottom", transform=ax2.get_yaxis_transform())
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("arithmetic intensity (FLOP per minimal byte)")
    ax2.set_ylabel("achieved GB/s (minimal bytes / median time)")
    ax2.set_title("bandwidth against the measured copy bandwidth")
    ax2.legend(fontsize=7, ncol=2)
    m = result["meta"]
    fig.suptitle(f"fastdw bench: {', '.join(m['suites'])} on {m['device_name']} "
                 f"(torch {m['torch']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gpu_compact(results: Sequence[Dict]) -> str:
    """One line per (suite, dtype, pass): geomean speedup per layout with the torch backend(s)
    seen and failures; short enough for the tail of a remote run's output."""
    lines = []
    for result in results:
        geo = {(g["provider"], g["suite"], g["dtype"], g["layout"], g["pass"]): g
               for g in result["geomean"]}
        backends: Dict[tuple, set] = {}
        for r in result["rows"]:
            if r["provider"] == "torch" and r["backend"]:
                backends.setdefault((r["suite"], r["dtype"], r["layout"], r["pass"]),
                                    set()).add(r["backend"])
        keys = sorted({k[:1] + k[1:3] + k[4:] for k in geo if k[1] != "all"},
                      key=lambda k: (k[1], k[2], k[3], k[0]))
        layouts = result["meta"]["layouts"]
        lines.append((f"{'provider':13s} {'suite':15s} {'dtype':5s} {'pass':10s} " + " ".join(
            f"{_LAYOUT_SHORT[l] + ' speedup [torch]':26s}" for l in layouts)).rstrip())
        for prov, suite, dtype, pass_ in keys:
            cells = []
            for l in layouts:
                g = geo.get((prov, suite, dtype, l, pass_))
                if g is None:
                    cells.append(f"{'-':26s}")
                    continue
                be = "/".join(sorted(backends.get((suite, dtype, l, pass_), ()))) or "?"
                fail = f" {g['failed']}F" if g["failed"] else ""
                cells.append(f"{_fmt(g['speedup'], '.2f') + 'x':7s} [{be}]{fail}".ljust(26))
            lines.append((f"{prov:13s} {suite:15s} {dtype:5s} {pass_:10s} " + " ".join(cells))
                         .rstrip())
    return "\n".join(lines)

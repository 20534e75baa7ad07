"""Compact summary of a bench/gpu_check.sh run: writes summary.md and prints it.

    python bench/gpu_summary.py --out $OUT --step build=ok:95:180:700 --step tests=FAIL(1):60:120:80

Reads (each optional) $OUT/triton.json, bench_dw.json, bench_sep.json and extras.json; prints
the summary (at most MAX_CHARS characters) and writes it to $OUT/summary.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional



def _report_module():
    """fastdw/benchmark/report.py loaded by path: it needs neither torch nor the compiled
    extension, so the summary is written even when the build failed."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fastdw", "benchmark",
                        "report.py")
    spec = importlib.util.spec_from_file_location("fastdw_bench_report", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_report = _report_module()
gpu_compact, geomean = _report.gpu_compact, _report.geomean


def _load(path: str) -> Optional[Dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _fmt(v, spec) -> str:
    return "-" if v is None else format(v, spec)


def separable_lines(result: Dict) -> List[str]:
    """Per (dtype, layout, pass): each provider's geomean speedup over torch, and the geomean
    of its peak extra memory relative to torch's."""
    rows = result["rows"]
    keys = list(dict.fromkeys((r["dtype"], r["layout"], r["pass"]) for r in rows))
    provs = [p for p in dict.fromkeys(r["provider"] for r in rows) if p != "torch"]
    out = [(f"{'dtype':5s} {'layout':13s} {'pass':8s} " + " ".join(
        f"{p + ' speedup / mem vs torch':34s}" for p in provs)).rstrip()]
    for dtype, layout, pass_ in keys:
        sel = [r for r in rows if (r["dtype"], r["layout"], r["pass"]) == (dtype, layout, pass_)]
        torch_rows = {(r["shape"], r["n"]): r for r in sel if r["provider"] == "torch"}
        cells = []
        for p in provs:
            mine = [r for r in sel if r["provider"] == p]
            ok = [r for r in mine if r["status"] == "ok"]
            mem = [r["peak_mb"] / torch_rows[(r["shape"], r["n"])]["peak_mb"] for r in ok
                   if (r["shape"], r["n"]) in torch_rows and r.get("peak_mb")
                   and torch_rows[(r["shape"], r["n"])].get("peak_mb")]
            fails = len(mine) - len(ok)
            g_mem = geomean(mem)
            cells.append(f"{_fmt(geomean([r.get('speedup') for r in ok]), '.2f')}x / "
                         + (f"{g_mem:.2f}x mem" if g_mem else "- mem")
                         + (f" {fails}F" if fails else ""))
        out.append((f"{dtype:5s} {layout:13s} {pass_:8s} " + " ".join(f"{c:34s}" for c in cells))
                   .rstrip())
    return out


# The device tool returns the last 12,000 characters of output; the summary is printed last and
# the verdict line after it, so the summary keeps below this, dropping its least useful parts.
MAX_CHARS = 11_000


def _step_lines(steps: List[str], budget: Optional[int], elapsed: Optional[int]) -> List[str]:
    """One line per step: state, seconds, cap; then the budget arithmetic."""
    out = [f"{'step':18s} {'state':10s} {'s':>5s} {'cap s':>6s} {'cpu s':>6s}"]
    used = 0
    for entry in steps:
        name, _, rest = entry.partition("=")
        state, secs, cap, cpu = (rest.split(":") + ["", "", "", ""])[:4]
        used += int(secs or 0)
        out.append(f"{name:18s} {state:10s} {secs:>5s} {cap:>6s} {cpu:>6s}")
    if budget is not None:
        out.append(f"budget {budget} s; steps took {used} s; whole run {elapsed} s so far. A step "
                   "runs only if its cap fits in what is left (SKIP otherwise).")
    return out


# The option that leaves out each group of steps (bench/gpu_check.sh).
_GROUPS = {"--no-tests": ("tests", "check"), "--no-extras": ("extras",),
           "--no-bench": ("triton", "bench_dw", "bench_sep")}


def rerun_line(steps: List[str]) -> Optional[str]:
    """The gpu_check.sh command that reruns the steps skipped for lack of time, leaving out
    each group whose steps all passed; None when nothing was skipped."""
    states = {e.partition("=")[0]: e.partition("=")[2].split(":")[0] for e in steps}
    if "SKIP" not in states.values():
        return None
    flags = [flag for flag, names in _GROUPS.items()
             if all(states.get(n) in ("ok", None) for n in names)
             and any(n in states for n in names)]
    return " ".join(["bash bench/gpu_check.sh", *flags])


def _triton_lines(report: Dict) -> List[str]:
    rows = report["variants"]
    failed = [r for r in rows if r["error"]]
    unusable = [r for r in rows if r.get("unusable")]
    per = {}
    for r in rows:
        per.setdefault(r["kernel"], []).append(r)
    out = [f"{report['calls']} calls of the fused ops -> {report['launches']} launches -> "
           f"{report['specializations']} variants a GPU compiles, {report['combinations']} "
           f"constexpr combinations x configs, {report['cover']} in their pairwise covering "
           f"set, {report.get('value', '-')} in the one-wise one",
           f"compiled for sm_{report['arch']} ({report['each']}): {len(rows)}, {len(failed)} "
           f"failed, {len(unusable)} unusable (the autotuner skips them), {report['seconds']} s "
           f"wall, {sum(r['seconds'] for r in rows):.0f} s of compiling"]
    for kernel, mine in per.items():
        out.append(f"- {kernel}: {len(mine)}, max shared "
                   f"{max((r['shared'] or 0) for r in mine)} B")
    for r in failed[:5]:
        out.append(f"- FAILED {r['kernel']} {r['constexprs']} warps {r['num_warps']}: "
                   f"{r['error'][:300]}")
    for r in unusable[:3]:
        c = r["constexprs"]
        out.append(f"- unusable {r['kernel']} {r['signature'].get('x_ptr')} "
                   f"{c.get('DOT_PRECISION')} BLOCK {c.get('BLOCK_P')}/{c.get('BLOCK_CI')}/"
                   f"{c.get('BLOCK_CO')} warps {r['num_warps']}: {r['unusable']}")
    return out


def _excerpt(path: str, lines: int = 10, width: int = 200) -> List[str]:
    try:
        with open(path, errors="replace") as f:
            text = [l.rstrip()[:width] for l in f if l.strip()]
    except OSError:
        return []
    return text[-lines:]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--step", action="append", default=[],
                   metavar="NAME=STATE:SECONDS:CAP:CPU_SECONDS")
    p.add_argument("--mode", default="gpu", help="gpu or dry-run")
    p.add_argument("--budget", type=int)
    p.add_argument("--elapsed", type=int)
    p.add_argument("--versions", help="file with the versions step's output")
    p.add_argument("--excerpt", action="append", default=[], metavar="STEP=FILE",
                   help="output of a failed step: its last lines go into the summary")
    args = p.parse_args(argv)
    dw = _load(os.path.join(args.out, "bench_dw.json"))
    sep = _load(os.path.join(args.out, "bench_sep.json"))
    extras = _load(os.path.join(args.out, "extras.json")) or {}
    triton = _load(os.path.join(args.out, "triton.json"))
    # (priority, lines): the lowest priorities go first when the summary is too long; every
    # table is also in a file that comes back
    sections = []
    head = [f"# fastdw GPU check ({args.mode})", ""]
    if args.versions:
        head += _excerpt(args.versions, lines=8) + [""]
    meta = (dw or sep or {}).get("meta")
    if meta:
        head.append(f"{meta.get('device_name')} (sm {meta.get('capability')}), torch "
                    f"{meta['torch']} (CUDA {meta.get('torch_cuda')}, cuDNN {meta.get('cudnn')}), "
                    f"triton {meta.get('triton')}, {meta['date']}; copy bandwidth "
                    f"{meta['copy_gbps']:.0f} GB/s; cudnn.benchmark={meta.get('cudnn_benchmark')}")
        head.append("")
    rerun = rerun_line(args.step)
    sections.append((9, head + ["```"] + _step_lines(args.step, args.budget, args.elapsed)
                     + ["```"] + ([f"Skipped for lack of time; to run them: `{rerun}`"]
                                  if rerun else []) + [""]))
    for entry in args.excerpt:
        name, _, path = entry.partition("=")
        sections.append((8, [f"## {name}: last lines (full output in log.txt)", "```"]
                         + _excerpt(path) + ["```", ""]))
    if triton:
        sections.append((7, ["## Triton variants compiled ahead (python -m fastdw.triton.variants)"]
                         + _triton_lines(triton) + [""]))
    if dw:
        sections.append((5, ["## depthwise: geomean speedup over torch across shapes (torch's "
                             "backend in brackets; nF: n rows failed their check)", "```",
                             gpu_compact([dw]), "```", ""]))
    if sep:
        sections.append((6, ["## fused separable: geomean speedup over torch / peak extra "
                             "memory relative to torch", "```"] + separable_lines(sep)
                         + ["```", ""]))
    big = extras.get("big")
    if big:
        md = [f"## forward over 2^31 elements: {big.get('shape', '')}, over 2^31: "
              f"{big.get('over_2^31')}"]
        for layout, r in (big.get("layouts") or {}).items():
            md.append(f"- {layout}: rel err vs float64 {r['rel_err_vs_float64']:.2g}, max diff "
                      f"vs torch {r['max_diff_vs_torch']:.2g}, fastdw {r['fastdw_ms']:.2f} ms "
                      f"({r['fastdw_gbps']:.0f} GB/s) vs torch {r['torch_ms']:.2f} ms: "
                      f"{r['speedup']:.2f}x")
        md.append(f"- status: {big['status']} {big.get('why', '')}")
        sections.append((8, md + [""]))
    e2e = extras.get("e2e")
    if e2e:
        md = ["## MobileNetV2 end to end"]
        for r in e2e.get("rows", []):
            md.append(f"- {r['mode']:9s} {r['dtype']:8s} {r['memory_format']:13s} "
                      f"{r['provider']:13s} batch {r['batch']}: {r['median_ms']:.2f} ms, "
                      f"{r['speedup']:.2f}x")
        for e in e2e.get("errors", []):
            md.append(f"- ERROR {e[:300]}")
        md.append(f"- status: {e2e['status']} {e2e.get('why', '')}")
        sections.append((8, md + [""]))
    fails = [r for res in (dw, sep) if res for r in res["rows"] if r["status"] != "ok"]
    if fails:
        md = [f"## {len(fails)} failed benchmark rows (first 12)"]
        for r in fails[:12]:
            md.append(f"- {r['status']} {r['provider']} {r['suite']} {r['shape']} N{r['n']} "
                      f"{r['dtype']} {r['layout']} {r['pass']}: {r['error'][:160]}")
        sections.append((7, md + [""]))
    text = _fit(sections, MAX_CHARS)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    return 0


def _fit(sections, limit: int) -> str:
    """The sections in order, leaving out the lowest-priority ones until the text fits."""
    kept = list(sections)
    while True:
        text = "\n".join(line for _, lines in kept for line in lines).rstrip()
        droppable = [i for i, (priority, _) in enumerate(kept) if priority is not None]
        if len(text) <= limit or not droppable:
            return text[:limit]
        drop = min(droppable, key=lambda i: (kept[i][0], -i))
        title = kept[drop][1][0].lstrip("# ")[:80]
        kept[drop] = (None, [f"({title}: left out to fit; see the files)", ""])


if __name__ == "__main__":
    sys.exit(main())

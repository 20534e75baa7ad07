"""Compact summary of a bench/gpu_check.sh run: writes summary.md and prints it.

    python bench/gpu_summary.py --out $OUT --step build=ok:95 --step tests=FAIL:60 ...

Reads (each optional) $OUT/bench_dw.json, $OUT/bench_sep.json and $OUT/extras.json.
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--step", action="append", default=[], metavar="NAME=STATUS:SECONDS")
    args = p.parse_args(argv)
    dw = _load(os.path.join(args.out, "bench_dw.json"))
    sep = _load(os.path.join(args.out, "bench_sep.json"))
    extras = _load(os.path.join(args.out, "extras.json")) or {}
    md: List[str] = ["# fastdw GPU check", ""]
    meta = (dw or sep or {}).get("meta")
    if meta:
        md.append(f"{meta.get('device_name')} (sm {meta.get('capability')}), torch "
                  f"{meta['torch']} (CUDA {meta.get('torch_cuda')}, cuDNN {meta.get('cudnn')}), "
                  f"triton {meta.get('triton')}, {meta['date']}; copy bandwidth "
                  f"{meta['copy_gbps']:.0f} GB/s; cudnn.benchmark={meta.get('cudnn_benchmark')}")
        md.append("")
    md.append("steps: " + ", ".join(s.replace("=", " ") for s in args.step))
    md.append("")
    if dw:
        md += ["## depthwise: geomean speedup over torch across shapes (torch's backend in "
               "brackets; nF: n rows failed their check)", "```", gpu_compact([dw]), "```", ""]
    if sep:
        md += ["## fused separable: geomean speedup over torch / peak extra memory relative "
               "to torch", "```"] + separable_lines(sep) + ["```", ""]
    big = extras.get("big")
    if big:
        md.append("## forward over 2^31 elements " + str(big.get("shape", "")))
        if big.get("layouts"):
            for layout, r in big["layouts"].items():
                md.append(f"- {layout}: rel err vs float64 {r['rel_err_vs_float64']:.2g}, max diff "
                          f"vs torch {r['max_diff_vs_torch']:.2g}, fastdw {r['fastdw_ms']:.2f} ms "
                          f"({r['fastdw_gbps']:.0f} GB/s) vs torch {r['torch_ms']:.2f} ms: "
                          f"{r['speedup']:.2f}x")
        md.append(f"- status: {big['status']} {big.get('why', '')}")
        md.append("")
    e2e = extras.get("e2e")
    if e2e:
        md.append("## MobileNetV2 end to end")
        for r in e2e.get("rows", []):
            md.append(f"- {r['mode']:9s} {r['dtype']:8s} {r['memory_format']:13s} "
                      f"{r['provider']:13s} batch {r['batch']}: {r['median_ms']:.2f} ms, "
                      f"{r['speedup']:.2f}x")
        for e in e2e.get("errors", []):
            md.append(f"- ERROR {e}")
        md.append(f"- status: {e2e['status']} {e2e.get('why', '')}")
        md.append("")
    fails = [r for res in (dw, sep) if res for r in res["rows"] if r["status"] != "ok"]
    if fails:
        md.append(f"## {len(fails)} failed rows (first 12)")
        for r in fails[:12]:
            md.append(f"- {r['status']} {r['provider']} {r['suite']} {r['shape']} N{r['n']} "
                      f"{r['dtype']} {r['layout']} {r['pass']}: {r['error'][:160]}")
        md.append("")
    text = "\n".join(md)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

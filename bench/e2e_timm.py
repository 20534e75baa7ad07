"""timm models end to end on the CPU: the training step (or inference) of timm's MobileNetV2,
EfficientNet-B0 and ConvNeXt-T, stock against fastdw.convert, in both layouts; the geomean over
the six is the issue-15 bar.

    python bench/e2e_timm.py                                   # train, N=8, 224px, both layouts
    python bench/e2e_timm.py --modes inference --json bench/results/x.json

Providers interleaved in rounds in one process (fastdw.models.run_e2e): torch (stock), fastdw
(convert(); the CPU planner may pick PyTorch's own convolution for a pass), fastdw-kernels
(convert() with fastdw's own kernels only)."""
import argparse
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fastdw.benchmark.runner import busy_elsewhere  # noqa: E402
from fastdw.planner import cpu_model  # noqa: E402
from fastdw.models import format_rows, run_e2e  # noqa: E402

MODELS = ["timm:mobilenetv2_100", "timm:efficientnet_b0", "timm:convnext_tiny"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--layouts", nargs="+", default=["nchw", "channels_last"],
                   choices=["nchw", "channels_last"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--modes", nargs="+", default=["train"], choices=["inference", "train"])
    p.add_argument("--providers", nargs="+", default=["torch", "fastdw", "fastdw-kernels"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--min-run-time", type=float, default=3.0,
                   help="seconds of timed runs per provider (split over the rounds)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", help="write the rows and the geomeans to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    busy = busy_elsewhere()
    print(f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"CPUs busy elsewhere at the start: {busy}")
    rows = []
    for model in args.models:
        for layout in args.layouts:
            got = run_e2e("cpu", args.batch, args.resolution, args.modes, args.providers,
                          torch.float32, layout == "channels_last", 1.0, args.min_run_time,
                          model=model, rounds=args.rounds)
            print(format_rows(got), flush=True)
            rows += got
    summary = {}
    for mode in args.modes:
        for prov in args.providers[1:]:
            ups = [r["speedup"] for r in rows if r["mode"] == mode and r["provider"] == prov]
            if ups:
                summary[f"{mode} {prov}"] = {
                    "geomean": math.exp(sum(map(math.log, ups)) / len(ups)), "min": min(ups),
                    "n": len(ups)}
    for k, v in summary.items():
        print(f"{k}: geomean {v['geomean']:.2f}x over {v['n']}, worst {v['min']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_model(), "threads": torch.get_num_threads(),
                       "busy_elsewhere": busy, "argv": sys.argv, "rows": rows,
                       "summary": summary}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()

"""MobileNetV2 end to end, stock vs fastdw.convert: a thin CLI over fastdw.models.run_e2e.

    python bench/e2e_mobilenetv2.py                       # CPU, batch 8
    python bench/e2e_mobilenetv2.py --device cuda         # GPU, batch 64
    python bench/e2e_mobilenetv2.py --json bench/results/e2e_cpu.json
"""
import argparse
import json

import torch

from fastdw.models import format_rows, run_e2e


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None, help="default: 8 on CPU, 64 on GPU")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--modes", nargs="+", default=["inference", "train"])
    p.add_argument("--providers", nargs="+", default=["torch", "fastdw", "fastdw-fused"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--min-run-time", type=float, default=1.0, help="CPU: seconds per timing")
    p.add_argument("--json", help="write the rows to this JSON file")
    args = p.parse_args(argv)
    rows = run_e2e(args.device, args.batch, args.resolution, args.modes, args.providers,
                   getattr(torch, args.dtype), args.channels_last, args.width_mult,
                   args.min_run_time)
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

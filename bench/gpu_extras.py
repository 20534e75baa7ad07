"""GPU checks that are not rows of a shape suite, for bench/gpu_check.sh.

    python bench/gpu_extras.py --json $OUT/extras.json [--skip-big] [--skip-e2e]
    python bench/gpu_extras.py --json x.json --device cpu --shape 2 8 33 31 --e2e-batch 2 \
        --e2e-resolution 64 --e2e-time 0.05      # the same checks, small, on the CPU (CI)

* big: a depthwise forward over more than 2^31 input elements ([50, 96, 720, 1280], k2 s2,
  NCHW then channels_last): fastdw against the float64 reference on whole samples at both
  ends of the tensor (past the 2^31 offset) and against PyTorch on the whole output; both timed.
* e2e: MobileNetV2 end to end (``fastdw.models.run_e2e``: stock vs converted vs fused), if
  this build has it.

Exit code 1 if a check fails or a part that exists raises.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import torch
import torch.nn.functional as F

# Run as a script from the repository root after an in-place build: import that fastdw.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BIG = (50, 96, 720, 1280)


def big_check(shape, device: torch.device, rep_ms: float) -> dict:
    import fastdw
    from fastdw import reference
    from fastdw.benchmark.timing import TimerConfig, time_group
    from fastdw import accuracy
    from fastdw.benchmark.verify import relative_error

    n, c, h, w = shape
    numel = n * c * h * w
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        need = 2.6 * numel * 4   # x, its channels_last copy while converting, outputs
        if free < need:
            return {"status": "SKIP", "why": f"needs ~{need / 2**30:.0f} GiB free, "
                                             f"{free / 2**30:.0f} GiB available"}
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(shape, device=device, generator=g)
    wt = torch.randn(c, 1, 2, 2, device=device, generator=g) / 2
    b = torch.randn(c, device=device, generator=g)
    out = {"shape": list(shape), "elements": numel, "over_2^31": numel > 2**31,
           "kernel": [2, 2], "stride": 2, "dtype": "fp32", "layouts": {}}
    ok = True
    for layout in ("nchw", "channels_last"):
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)   # the NCHW copy is freed
            if device.type == "cuda":
                torch.cuda.empty_cache()
        res = {}
        y = fastdw.depthwise_conv2d(x, wt, b, stride=2)
        worst = 0.0
        for i in sorted({0, n // 2, n - 1}):   # with BIG, sample n-1 starts past element 2^31
            expected, = accuracy.expected(
                lambda x_, w_, b_: reference.depthwise_conv2d(x_, w_, b_, stride=2),
                [x[i:i + 1], wt, b])
            err = relative_error(y[i:i + 1], expected)
            worst = max(worst, err.rel_l2)
            ok &= err.ok()
        res["rel_err_vs_float64"] = worst
        y_t = F.conv2d(x, wt, b, stride=2, groups=c)
        res["max_diff_vs_torch"] = float((y - y_t).abs().max()) / float(y_t.abs().max())
        res["nonfinite"] = int((~torch.isfinite(y)).sum())
        # Over the whole output: catches wrong or unwritten regions (an indexing overflow gives
        # O(1) differences) while allowing for PyTorch's own rounding (TF32 in cuDNN).
        ok &= res["max_diff_vs_torch"] < 1e-2 and res["nonfinite"] == 0
        del y, y_t
        timings = time_group({"fastdw": lambda: fastdw.depthwise_conv2d(x, wt, b, stride=2),
                              "torch": lambda: F.conv2d(x, wt, b, stride=2, groups=c)},
                             device, TimerConfig(min_time=0.2, rep_ms=rep_ms, warmup_ms=5))
        gbytes = (numel + numel // 4) * 4 / 1e9   # read x, write y (a quarter of x)
        for name, tm in timings.items():
            res[f"{name}_ms"] = tm.median_ms
            res[f"{name}_gbps"] = gbytes / (tm.median_ms * 1e-3)
        res["speedup"] = res["torch_ms"] / res["fastdw_ms"]
        out["layouts"][layout] = res
    del x
    out["status"] = "PASS" if ok else "FAIL"
    return out


def e2e(device: torch.device, min_run_time: float, batch=None, resolution: int = 224) -> dict:
    try:
        from fastdw.models import run_e2e
    except ImportError as e:
        return {"status": "SKIP", "why": f"fastdw.models.run_e2e unavailable: {e}"}
    rows, errors = [], []
    # fp32 NCHW inference and training; fp16 channels_last inference (how it is deployed).
    for dtype, channels_last, modes in ((torch.float32, False, ("inference", "train")),
                                        (torch.float16, True, ("inference",))):
        try:
            rows += run_e2e(device, batch=batch, resolution=resolution, dtype=dtype,
                            channels_last=channels_last, modes=modes, min_run_time=min_run_time)
        except Exception as e:  # noqa: BLE001 - reported
            errors.append(f"{dtype} channels_last={channels_last}: {type(e).__name__}: {e}")
    return {"status": "FAIL" if errors else "PASS", "rows": rows, "errors": errors}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", required=True)
    p.add_argument("--skip-big", action="store_true")
    p.add_argument("--skip-e2e", action="store_true")
    p.add_argument("--rep-ms", type=float, default=30.0)
    p.add_argument("--device", default="cuda", help="cuda (default); cpu for a smoke test")
    p.add_argument("--shape", type=int, nargs=4, default=BIG, metavar=("N", "C", "H", "W"),
                   help=f"input of the big check (default {BIG})")
    p.add_argument("--e2e-batch", type=int, default=None,
                   help="MobileNetV2 batch (default run_e2e's: 64 on GPU, 8 on CPU)")
    p.add_argument("--e2e-resolution", type=int, default=224)
    p.add_argument("--e2e-time", type=float, default=0.5, metavar="S",
                   help="minimum timed seconds per MobileNetV2 measurement")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_extras: no GPU", file=sys.stderr)
        return 1
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "torch": torch.__version__}
    parts = [("big", lambda: big_check(tuple(args.shape), device, args.rep_ms), args.skip_big),
             ("e2e", lambda: e2e(device, args.e2e_time, args.e2e_batch, args.e2e_resolution),
              args.skip_e2e)]
    failed = False
    for name, fn, skip in parts:
        if skip:
            result[name] = {"status": "SKIP", "why": "--skip-" + name}
            continue
        t0 = time.perf_counter()
        try:
            result[name] = fn()
        except Exception as e:  # noqa: BLE001 - reported
            traceback.print_exc()
            result[name] = {"status": "ERROR", "why": f"{type(e).__name__}: {e}"}
        result[name]["seconds"] = round(time.perf_counter() - t0, 1)
        failed |= result[name]["status"] in ("FAIL", "ERROR")
        print(f"gpu_extras {name}: {result[name]['status']} "
              f"({result[name]['seconds']} s)", flush=True)
        with open(args.json, "w") as f:   # write as we go: a later part may hit the time limit
            json.dump(result, f, indent=1, default=str)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

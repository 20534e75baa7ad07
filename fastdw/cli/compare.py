"""``python -m fastdw compare``: the tutorial's speed test, measured properly.

A standard k x k conv against a depthwise-separable one (depthwise k x k, then pointwise 1x1),
C_in -> C_out at size x size (default 64 -> 128 at 224x224, batch 1, as in the tutorial), in
PyTorch and in fastdw, on the default device. Every variant is checked against a float64
reference first; times are medians after warm-up (CPU: torch.utils.benchmark, variants
interleaved; GPU: triton's do_bench on CUDA events), with parameter and FLOP counts beside.
"""
from __future__ import annotations

import json
import math

from . import command_parser, device_arg, positive_float, positive_int


def add_parser(sub) -> None:
    p = command_parser(sub, "compare", "standard vs depthwise-separable conv speed test",
                       __doc__, run)
    p.add_argument("--batch", "-b", type=positive_int, default=1, help="batch (default 1)")
    p.add_argument("--c-in", type=positive_int, default=64, help="input channels (64)")
    p.add_argument("--c-out", type=positive_int, default=128, help="output channels (128)")
    p.add_argument("--size", type=positive_int, default=224, help="height = width (224)")
    p.add_argument("--k", type=positive_int, default=3, help="kernel size, odd (3)")
    p.add_argument("--device", type=device_arg, default="auto", help="auto, cpu, cuda[:N]")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    p.add_argument("--channels-last", action="store_true", help="channels_last input")
    p.add_argument("--min-time", type=positive_float, default=0.5, metavar="S",
                   help="CPU: seconds of timed runs per variant (default 0.5)")
    p.add_argument("--rep-ms", type=positive_float, default=50.0, metavar="MS",
                   help="GPU: do_bench rep in ms (default 50)")
    p.add_argument("--json", metavar="PATH", help="write the rows as JSON")


def _variants(x, std_w, std_b, dw_w, dw_b, pw_w, pw_b, pad):
    """(name, params, fn) for each variant; fn returns the output."""
    import torch.nn.functional as F

    import fastdw

    c = x.shape[1]
    count = lambda *ts: sum(t.numel() for t in ts)  # noqa: E731
    sep_params = count(dw_w, dw_b, pw_w, pw_b)
    out = [
        ("torch: standard conv", count(std_w, std_b),
         lambda: F.conv2d(x, std_w, std_b, padding=pad)),
        ("torch: separable (dw + pw)", sep_params,
         lambda: F.conv2d(F.conv2d(x, dw_w, dw_b, padding=pad, groups=c), pw_w, pw_b)),
        ("fastdw: dw + torch pw", sep_params,
         lambda: F.conv2d(fastdw.depthwise_conv2d(x, dw_w, dw_b, padding=pad), pw_w, pw_b)),
    ]
    try:
        from fastdw.separable import backend_for, depthwise_separable_conv2d
    except ImportError:
        return out
    out.append((f"fastdw: depthwise_separable_conv2d [{backend_for(x, dw_w)[0]}]", sep_params,
                lambda: depthwise_separable_conv2d(x, dw_w, dw_b, pw_w, pw_b, padding=pad)))
    return out


def run(args, parser) -> int:
    import torch
    import torch.nn.functional as F

    from ..benchmark.runner import DTYPES, resolve_device
    from ..benchmark.timing import TimerConfig, describe, time_group
    from .. import accuracy

    if args.k % 2 == 0:
        parser.error("--k must be odd (padding k//2 keeps the size)")
    device = resolve_device(args.device)
    dtype = DTYPES[args.dtype]
    n, ci, co, s, k = args.batch, args.c_in, args.c_out, args.size, args.k
    pad = k // 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    g = torch.Generator(device=device).manual_seed(0)

    def randn(*size, scale=1.0):
        return (torch.randn(size, generator=g, device=device) * scale).to(dtype)
    x = randn(n, ci, s, s)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    std_w, std_b = randn(co, ci, k, k, scale=(ci * k * k) ** -0.5), randn(co)
    dw_w, dw_b = randn(ci, 1, k, k, scale=1 / k), randn(ci)
    pw_w, pw_b = randn(co, ci, 1, 1, scale=ci ** -0.5), randn(co)

    ref_std, = accuracy.expected(lambda x_, w_, b_: F.conv2d(x_, w_, b_, padding=pad),
                                 [x, std_w, std_b])
    ref_sep, = accuracy.expected(
        lambda x_, w_, b_, pw_, pb_: F.conv2d(F.conv2d(x_, w_, b_, padding=pad, groups=ci),
                                              pw_, pb_), [x, dw_w, dw_b, pw_w, pw_b])
    # The standard conv and the pointwise conv are GEMMs: TF32 on GPU for fp32 by default; the
    # separable variants round their depthwise result to a half dtype.
    rounded = "tf32" if (dtype == torch.float32 and device.type == "cuda") else \
        {torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(dtype)
    flops_std = 2 * n * co * s * s * ci * k * k
    flops_sep = 2 * n * ci * s * s * k * k + 2 * n * co * s * s * ci
    rows, fns = [], {}
    with torch.no_grad():
        for name, params, fn in _variants(x, std_w, std_b, dw_w, dw_b, pw_w, pw_b, pad):
            standard = name.endswith("standard conv")
            verdict = accuracy.compare(fn(), ref_std if standard else ref_sep, dtype, rounded)
            row = {"variant": name, "params": params,
                   "gflop": (flops_std if standard else flops_sep) / 1e9,
                   "rel_err": verdict.rel_l2, "bound": verdict.worst,
                   "status": "ok" if verdict.ok else "FAIL"}
            rows.append(row)
            if row["status"] == "ok":
                fns[name] = fn
        timings = time_group(fns, device, TimerConfig(min_time=args.min_time, rep_ms=args.rep_ms))
    base = timings.get("torch: standard conv")
    for row in rows:
        tm = timings.get(row["variant"])
        if tm is not None:
            row.update(median_ms=tm.median_ms, lo_ms=tm.lo_ms, hi_ms=tm.hi_ms,
                       gflops=row["gflop"] / (tm.median_ms * 1e-3),
                       speedup=(base.median_ms / tm.median_ms) if base else None)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"{ci} -> {co}, {k}x{k}, input [{n},{ci},{s},{s}] {args.dtype}"
          f"{' channels_last' if args.channels_last else ''} on {device} ({name}), "
          f"torch {torch.__version__}")
    print(f"timer: {describe(device)['timer']}; {describe(device)['quantiles']}")
    head = f"{'variant':48s} {'params':>11s} {'GFLOP':>7s} {'median ms':>10s} " \
           f"{'[lo, hi] ms':>19s} {'GFLOP/s':>8s} {'vs standard':>11s}"
    print(head)
    print("-" * len(head))
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['variant']:48s} {r['params']:>11,} {r['gflop']:>7.2f}  FAIL: error "
                  f"{r['bound']:.2g}x the bound of fastdw.accuracy (rel err {r['rel_err']:.2g})")
            continue
        spread = f"[{r['lo_ms']:.3f}, {r['hi_ms']:.3f}]"
        sp = f"{r['speedup']:.2f}x" if r.get("speedup") else "-"
        print(f"{r['variant']:48s} {r['params']:>11,} {r['gflop']:>7.2f} {r['median_ms']:>10.3f} "
              f"{spread:>19s} {r['gflops']:>8.1f} {sp:>11s}")
    ratio = flops_std / flops_sep
    print(f"\nthe separable conv does {ratio:.1f}x fewer FLOPs and has "
          f"{rows[0]['params'] / rows[1]['params']:.1f}x fewer parameters; the tutorial's naive "
          "loop (no warm-up, no synchronisation) reported 45.32 ms vs 12.76 ms.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "device_name": name, "torch": torch.__version__,
                       "shape": [n, ci, s, s], "c_out": co, "k": k, "dtype": args.dtype,
                       "channels_last": args.channels_last, "rows": rows}, f, indent=1,
                      default=lambda v: None if isinstance(v, float) and math.isnan(v) else v)
    return 1 if any(r["status"] != "ok" for r in rows) else 0

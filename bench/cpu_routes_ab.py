"""In-process A/B of the CPU kernel routes against PyTorch: how the routing rules in
csrc/cpu/depthwise_cpu.cpp (blocked_forward_wins, direct_forward_wins, blocked_weight_wins) were
measured.

    python bench/cpu_routes_ab.py --suite mobilenetv2 --layout channels_last --batch 1 8
    python bench/cpu_routes_ab.py --pass bwd_input --routes 0 1 auto --dtype bf16

Each route is a value of FASTDW_CPU_BLOCKED, which the library reads on every call:
0 = per-layout kernels only, 1 = ring kernels wherever they apply, direct = the in-place
channels_last forward wherever it applies, auto = the measured rules. On a noisy machine (a
shared VM can swing 2x between seconds) only ratios taken close together mean anything, so
PyTorch and every route are timed in rounds, one after the other in the same process, and the
report is the median over rounds of the per-round ratio PyTorch time / route time."""
import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

import fastdw  # noqa: F401  (registers torch.ops.fastdw)
from fastdw.benchmark.suites import load_suite

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def median_time(fn, reps):
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def calls(shape, n, dtype, channels_last, which):
    """(PyTorch call, fastdw call) for one pass of one layer."""
    x = torch.randn(n, shape.c, shape.h, shape.w, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(shape.c * shape.m, 1, shape.kh, shape.kw, dtype=dtype)
    args = (list(shape.stride), list(shape.padding), list(shape.dilation))
    g = torch.randn_like(F.conv2d(x, w, None, *args, shape.c))
    if which == "fwd":
        return (lambda: F.conv2d(x, w, None, *args, shape.c),
                lambda: torch.ops.fastdw.depthwise_conv2d(x, w, None, *args))
    mask = [which == "bwd_input", which == "bwd_weight", False]
    ref = lambda: torch.ops.aten.convolution_backward(  # noqa: E731
        g, x, w, None, *args, False, [0, 0], shape.c, mask)
    if which == "bwd_input":
        return ref, lambda: torch.ops.fastdw.depthwise_conv2d_backward_input(
            g, w, list(x.shape), *args)
    return ref, lambda: torch.ops.fastdw.depthwise_conv2d_backward_weight(
        g, x, list(w.shape), *args)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", nargs="+", default=["mobilenetv2", "efficientnet_b0",
                                                       "convnext_t"])
    parser.add_argument("--pass", dest="which", default="fwd",
                        choices=["fwd", "bwd_input", "bwd_weight"])
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--layout", nargs="+", default=["nchw", "channels_last"],
                        choices=["nchw", "channels_last"])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--routes", nargs="+", default=["0", "1", "direct", "auto"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--block-ms", type=float, default=20.0,
                        help="time per timing block (reps are chosen to fill it)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    saved = os.environ.get("FASTDW_CPU_BLOCKED")
    print(f"torch {torch.__version__}, {args.threads} threads, {args.dtype}, {args.which}; "
          "per route: median time, median over rounds of the ratio torch / route")
    try:
        for suite in args.suite:
            for shape in load_suite(suite).shapes:
                if shape.kind != "depthwise":  # separable layers are not CPU-kernel routes
                    continue
                for n in ([shape.n] if shape.n else args.batch):
                    for layout in args.layout:
                        ref, ours = calls(shape, n, DTYPES[args.dtype],
                                          layout == "channels_last", args.which)
                        ref(), ref()
                        for route in args.routes:
                            os.environ["FASTDW_CPU_BLOCKED"] = route
                            ours(), ours()
                        reps = max(5, min(200, int(args.block_ms / 1e3 / median_time(ref, 3))))
                        times = {r: [] for r in ["torch"] + args.routes}
                        ratios = {r: [] for r in args.routes}
                        for _ in range(args.rounds):
                            t_ref = median_time(ref, reps)
                            times["torch"].append(t_ref)
                            for route in args.routes:
                                os.environ["FASTDW_CPU_BLOCKED"] = route
                                t = median_time(ours, reps)
                                times[route].append(t)
                                ratios[route].append(t_ref / t)
                        cells = "  ".join(
                            f"{r}: {statistics.median(times[r]) * 1e6:8.1f} us "
                            f"{statistics.median(ratios[r]):4.2f}x" for r in args.routes)
                        print(f"{suite:16} {shape.label:14} N={n:<3} {layout:13} torch "
                              f"{statistics.median(times['torch']) * 1e6:8.1f} us | {cells}",
                              flush=True)
    finally:
        if saved is None:
            os.environ.pop("FASTDW_CPU_BLOCKED", None)
        else:
            os.environ["FASTDW_CPU_BLOCKED"] = saved


if __name__ == "__main__":
    main()

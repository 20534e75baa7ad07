"""In-process A/B of the CPU kernels against PyTorch and against each other: how the rules of
csrc/cpu/plan.cpp were measured.

    python bench/cpu_routes_ab.py --suite mobilenetv2 --layout channels_last --batch 1 8
    python bench/cpu_routes_ab.py --pass bwd_input --kernels nchw_planes nhwc_pixels planned
    python bench/cpu_routes_ab.py --isa avx512 avx2 --kernels nhwc_tiles

Each route is a kernel of fastdw.planner.kernels() forced for the call (wherever it applies;
routes it does not apply to are left out of that row), optionally in several ISA copies
(kernel@isa), plus `planned` (the planner's own choice, which may be PyTorch's convolution,
`aten`) and `torch` (F.conv2d / aten.convolution_backward, the baseline of every ratio). On a
noisy machine (a shared VM can swing 2x between seconds) only ratios taken close together mean
anything, so PyTorch and every route are timed in rounds, one after the other in the same
process, and the report is the median over rounds of the per-round ratio torch time / route
time. The line starts with the competing load measured before the row (CPUs busy elsewhere).
On a machine others are loading, `--threads 1 --clock thread` times each call by the CPU time of
the calling thread (time.thread_time: with one thread every kernel, PyTorch's included, runs on
it), which waiting for a core does not inflate."""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from fastdw import _C, planner
from fastdw.benchmark.runner import _busy_elsewhere
from fastdw.benchmark.suites import load_suite

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


def median_time(fn, reps, clock=time.perf_counter):
    times = []
    for _ in range(reps):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def calls(shape, n, dtype, channels_last, which):
    """(PyTorch call, fastdw op call, problem tuple) for one pass of one layer."""
    x = torch.randn(n, shape.c, shape.h, shape.w, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(shape.c * shape.m, 1, shape.kh, shape.kw, dtype=dtype)
    args = (list(shape.stride), list(shape.padding), list(shape.dilation))
    g = torch.randn_like(F.conv2d(x, w, None, *args, shape.c))
    prob = planner.problem(x, w, shape.stride, shape.padding, shape.dilation, which,
                           grad_output=g)
    if which == "fwd":
        return (lambda: F.conv2d(x, w, None, *args, shape.c),
                lambda: torch.ops.fastdw.depthwise_conv2d(x, w, None, *args), prob)
    mask = [which == "bwd_input", which == "bwd_weight", False]
    ref = lambda: torch.ops.aten.convolution_backward(  # noqa: E731
        g, x, w, None, *args, False, [0, 0], shape.c, mask)
    if which == "bwd_input":
        return ref, lambda: torch.ops.fastdw.depthwise_conv2d_backward_input(
            g, w, list(x.shape), *args), prob
    return ref, lambda: torch.ops.fastdw.depthwise_conv2d_backward_weight(
        g, x, list(w.shape), *args), prob


def routed(op, route):
    """op run on `route`: 'planned', 'kernel' or 'kernel@isa' (forced through the library's own
    switch: two calls, no Python context manager, in the timed loop)."""
    if route == "planned":
        return op
    kernel, _, isa = route.partition("@")

    def run():
        old = _C.cpu_forced()
        _C.cpu_set_forced(kernel, isa or old[1])
        try:
            return op()
        finally:
            _C.cpu_set_forced(*old)
    return run


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
    parser.add_argument("--kernels", nargs="+", default=list(planner.kernels()) + ["planned"],
                        help="routes: kernel names and 'planned' (default: all of them)")
    parser.add_argument("--isa", nargs="+", default=None,
                        help="ISA copies to time each kernel in (default: the planner's)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--block-ms", type=float, default=20.0,
                        help="time per timing block (reps are chosen to fill it)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall (default), or thread: CPU time of this thread (--threads 1)")
    args = parser.parse_args()
    if args.clock == "thread" and args.threads != 1:
        parser.error("--clock thread measures one thread: use it with --threads 1")
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    routes = []
    for k in args.kernels:
        if k == "planned" or not args.isa or k == "aten":
            routes.append(k)
        else:
            routes += [f"{k}@{isa}" for isa in args.isa]
    print(f"torch {torch.__version__}, {args.threads} threads, {args.clock} clock, "
          f"{args.dtype}, {args.which}, "
          f"ISA {planner.CpuBackend().isa}; per route: median time, median over rounds of the "
          "ratio torch / route ('-': the kernel does not apply)")
    for suite in args.suite:
        for shape in load_suite(suite).shapes:
            if shape.kind != "depthwise":  # separable layers are not CPU-kernel routes
                continue
            for n in ([shape.n] if shape.n else args.batch):
                for layout in args.layout:
                    ref, op, prob = calls(shape, n, DTYPES[args.dtype],
                                          layout == "channels_last", args.which)
                    live = [r for r in routes if r == "planned"
                            or planner.unsupported(r.partition("@")[0], prob) is None]
                    fns = {r: routed(op, r) for r in live}
                    busy = _busy_elsewhere(0.2)
                    ref(), ref()
                    for fn in fns.values():
                        fn(), fn()
                    reps = max(5, min(200, int(args.block_ms / 1e3 /
                                            median_time(ref, 3, clock))))
                    times = {r: [] for r in ["torch"] + live}
                    ratios = {r: [] for r in live}
                    for _ in range(args.rounds):
                        t_ref = median_time(ref, reps, clock)
                        times["torch"].append(t_ref)
                        for r, fn in fns.items():
                            t = median_time(fn, reps, clock)
                            times[r].append(t)
                            ratios[r].append(t_ref / t)
                    cells = "  ".join(
                        f"{r}: " + (f"{statistics.median(times[r]) * 1e6:8.1f} us "
                                    f"{statistics.median(ratios[r]):4.2f}x" if r in live else "-")
                        for r in routes)
                    print(f"busy {busy if busy is not None else '?'} | {suite:16} "
                          f"{shape.label:14} N={n:<3} {layout:13} torch "
                          f"{statistics.median(times['torch']) * 1e6:8.1f} us | {cells}",
                          flush=True)


if __name__ == "__main__":
    main()

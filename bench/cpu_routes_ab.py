"""In-process A/B of the CPU kernels against PyTorch and against each other: how the rules of
csrc/cpu/plan.cpp were measured.

    python bench/cpu_routes_ab.py --suite mobilenetv2 --layout channels_last --batch 1 8
    python bench/cpu_routes_ab.py --pass bwd_input --kernels nchw_planes nhwc_pixels planned
    python bench/cpu_routes_ab.py --isa avx512 avx2 --kernels nhwc_tiles

Each route is a kernel of fastdw.planner.kernels() forced for the call (wherever it applies;
routes it does not apply to show '-'), optionally in several ISA copies (kernel@isa), plus
`planned` (the planner's own choice, named in the cell, which may be PyTorch's `aten`) and `torch`
(F.conv2d / aten.convolution_backward, the baseline of every ratio). Timing is the benchmark
engine's (fastdw.benchmark.timing.time_cpu_group): PyTorch and every route interleaved in
rounds in one process, so load from elsewhere falls on all alike; each cell is the route's
median time and the ratio of medians torch / route. The line starts with the competing load
measured before the row (CPUs busy elsewhere). `python -m fastdw bench` compares the planned
op and fastdw's own kernels (provider fastdw-cpu-kernels) with PyTorch; this script is the one
that times each kernel, forced, side by side."""
import argparse

import torch
import torch.nn.functional as F

from fastdw import _C, planner
from fastdw.benchmark.runner import busy_elsewhere
from fastdw.benchmark.suites import load_suite
from fastdw.benchmark.timing import TimerConfig, time_cpu_group

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--min-time", type=float, default=0.5,
                        help="seconds of timing per route and row, over all rounds")
    args = parser.parse_args()
    timer = TimerConfig(min_time=args.min_time, rounds=args.rounds,
                        warmup=min(0.05, args.min_time))
    torch.set_num_threads(args.threads)
    routes = []
    for k in args.kernels:
        if k == "planned" or not args.isa or k == "aten":
            routes.append(k)
        else:
            routes += [f"{k}@{isa}" for isa in args.isa]
    print(f"torch {torch.__version__}, {args.threads} threads, {args.dtype}, {args.which}, "
          f"ISA {planner.CpuBackend().isa}; per route: median time, ratio of medians "
          "torch / route ('-': the kernel does not apply)")
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
                    busy = busy_elsewhere(0.2)
                    times = time_cpu_group(
                        {"torch": ref, **{r: routed(op, r) for r in live}}, timer)
                    t_ref = times["torch"].median_ms
                    planned = planner._plan_of(prob).kernel
                    cells = "  ".join(
                        (f"planned ({planned})" if r == "planned" else r) + ": "
                        + (f"{times[r].median_ms * 1e3:8.1f} us "
                           f"{t_ref / times[r].median_ms:4.2f}x" if r in live else "-")
                        for r in routes)
                    print(f"busy {busy if busy is not None else '?'} | {suite:16} "
                          f"{shape.label:14} N={n:<3} {layout:13} "
                          f"torch {t_ref * 1e3:8.1f} us | {cells}", flush=True)


if __name__ == "__main__":
    main()

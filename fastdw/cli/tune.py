"""``python -m fastdw tune``: measure the CPU kernels on this machine and write its plan file.

For every depthwise layer of the suites, batch, dtype, layout and pass, the CPU op runs once in
benchmark mode: every kernel that applies (PyTorch's own convolution included) is timed and the
fastest kept. The plans go to this machine's plan file (``fastdw.planner.plan_file()``, keyed by
CPU model, ISA, torch and fastdw versions), which later processes load when fastdw is imported;
layers it does not list keep the built-in rules. ``--clear`` deletes the file. Tune with the
thread count you will run with: plans are per thread count.
"""
from __future__ import annotations

import sys

from . import command_parser, positive_int

PASSES = ("fwd", "bwd_input", "bwd_weight")
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def add_parser(sub) -> None:
    from ..benchmark.suites import suite_names

    suites = suite_names()
    p = command_parser(sub, "tune", "measure the CPU kernels here and write the plan file",
                       __doc__, run)
    p.add_argument("--suite", "-s", nargs="+", choices=suites + ["all"],
                   default=["mobilenetv2", "efficientnet_b0", "convnext_t"], metavar="SUITE",
                   help=f"shape suites ({', '.join(suites)}, all); default mobilenetv2 "
                        "efficientnet_b0 convnext_t")
    p.add_argument("--pass", dest="passes", nargs="+", choices=PASSES, default=list(PASSES),
                   metavar="PASS", help="passes (fwd, bwd_input, bwd_weight); default all")
    p.add_argument("--dtype", dest="dtypes", nargs="+", choices=tuple(DTYPES), default=["fp32"],
                   metavar="DTYPE", help="dtypes (fp32, bf16, fp16); default fp32")
    p.add_argument("--layout", dest="layouts", nargs="+", choices=("nchw", "channels_last"),
                   default=["nchw", "channels_last"], metavar="LAYOUT")
    p.add_argument("--batch", "-b", dest="batches", nargs="+", type=positive_int, default=[1, 8],
                   metavar="N", help="batch sizes (default 1 8)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads (default: torch's); plans are kept per thread count")
    p.add_argument("--quick", action="store_true", help="the suites' quick shapes only")
    p.add_argument("--out", metavar="PATH", help="plan file to write (default: this machine's)")
    p.add_argument("--clear", action="store_true",
                   help="delete this machine's plan file (and tune nothing)")


def _tensors(shape, n, dtype, channels_last, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, shape.c, shape.h, shape.w, generator=g).to(dtype)
    w = (torch.randn(shape.c * shape.m, 1, shape.kh, shape.kw, generator=g)
         * (shape.kh * shape.kw) ** -0.5).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, w


def run(args, parser) -> int:
    import torch

    from .. import planner
    from ..benchmark.suites import load_suite, suite_names

    if args.clear:
        path = planner.plan_file()
        planner.clear_plans(delete_file=True)
        print(f"deleted {path}" if path else "plan files are off (FASTDW_CPU_PLAN_FILE=none)")
        return 0
    if planner.plan_file() is None and not args.out:
        parser.error("plan files are off (FASTDW_CPU_PLAN_FILE=none); give --out PATH")
    if args.threads:
        torch.set_num_threads(args.threads)
    ops = torch.ops.fastdw
    suites = suite_names() if "all" in args.suite else list(dict.fromkeys(args.suite))
    print(f"tuning on {planner.machine_key()}, {torch.get_num_threads()} threads")
    print(f"{'layer':28s} {'N':>3s} {'dtype':8s} {'layout':13s} {'pass':10s} "
          f"{'rules':15s} {'measured fastest':17s}")
    planner.clear_plans()
    rows = 0
    with planner.force(kernel=""):
        old = planner.CpuBackend().benchmark
        planner.CpuBackend().benchmark = True
        try:
            for suite in suites:
                s = load_suite(suite)
                for shape in s.select(args.quick):
                    if shape.kind != "depthwise" or not shape.runs_on("cpu"):
                        continue
                    conv = (list(shape.stride), list(shape.padding), list(shape.dilation))
                    for n in ([shape.n] if shape.n else args.batches):
                        for dtype_name in args.dtypes:
                            dtype = getattr(torch, DTYPES[dtype_name])
                            for layout in args.layouts:
                                x, w = _tensors(shape, n, dtype, layout == "channels_last")
                                y = ops.depthwise_conv2d(x, w, None, *conv)
                                gy = torch.randn_like(y)
                                for pass_ in args.passes:
                                    prob = planner.problem(
                                        x, w, shape.stride, shape.padding, shape.dilation,
                                        pass_, grad_output=gy)
                                    planner.CpuBackend().benchmark = False
                                    ruled = planner._plan_of(prob).kernel
                                    planner.CpuBackend().benchmark = True
                                    if pass_ == "bwd_input":
                                        ops.depthwise_conv2d_backward_input(
                                            gy, w, list(x.shape), *conv)
                                    elif pass_ == "bwd_weight":
                                        ops.depthwise_conv2d_backward_weight(
                                            gy, x, list(w.shape), *conv)
                                    else:
                                        ops.depthwise_conv2d(x, w, None, *conv)
                                    chosen = planner._plan_of(prob).kernel
                                    rows += 1
                                    print(f"{suite + ' ' + shape.label:28s} {n:3d} "
                                          f"{dtype_name:8s} {layout:13s} {pass_:10s} "
                                          f"{ruled:15s} {chosen:17s}", flush=True)
        finally:
            planner.CpuBackend().benchmark = old
    path = planner.save_plans(args.out)
    print(f"wrote {rows} plans to {path}", file=sys.stderr)
    return 0

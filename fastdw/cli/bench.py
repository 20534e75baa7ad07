"""``python -m fastdw bench``: time fastdw against PyTorch over shape suites.

With no options: the MobileNetV2 depthwise shapes on the default device (CUDA if present), fwd
and fwd+bwd, fp32, NCHW and channels_last, batch 8 on CPU (32 on GPU), every available provider.
"""
from __future__ import annotations

import sys

from . import command_parser, device_arg, positive_float, positive_int

from ..benchmark.bandwidth import PASSES
from ..benchmark.providers import PROVIDER_NAMES as PROVIDERS
from ..benchmark.runner import DTYPES as _DTYPES
from ..benchmark.runner import LAYOUTS

DTYPES = tuple(_DTYPES)


def add_parser(sub) -> None:
    from ..benchmark.suites import suite_names

    suites = suite_names()
    p = command_parser(
        sub, "bench", "benchmark fastdw against PyTorch", __doc__, run,
        epilog="Every provider's outputs are checked against a float64 reference before it is "
               "timed; a mismatch is reported as FAIL and not timed (exit code 1). Bytes are "
               "the minimal traffic of a pass (inputs read once, outputs written once); "
               "%copy compares with a large tensor copy timed in the same run.")
    p.add_argument("--suite", "-s", nargs="+", choices=suites + ["all"], default=["mobilenetv2"],
                   metavar="SUITE", help=f"shape suites ({', '.join(suites)}, all); "
                                         "default mobilenetv2")
    p.add_argument("--pass", dest="passes", nargs="+", choices=PASSES + ("all",),
                   default=["fwd", "fwd+bwd"], metavar="PASS",
                   help=f"passes ({', '.join(PASSES)}, all); default fwd fwd+bwd. Separable "
                        "shapes have fwd and fwd+bwd only")
    p.add_argument("--dtype", dest="dtypes", nargs="+", choices=DTYPES, default=["fp32"],
                   metavar="DTYPE", help=f"dtypes ({', '.join(DTYPES)}); default fp32")
    p.add_argument("--layout", dest="layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS),
                   metavar="LAYOUT", help="memory layouts (nchw, channels_last); default both")
    p.add_argument("--batch", "-b", dest="batches", nargs="+", type=positive_int, metavar="N",
                   help="batch sizes (default 8 on CPU, 32 on GPU; shapes with a fixed batch "
                        "keep theirs)")
    p.add_argument("--provider", "-p", dest="providers", nargs="+", choices=PROVIDERS,
                   metavar="PROVIDER", help=f"providers ({', '.join(PROVIDERS)}); default every "
                                            "available one; torch is always run as baseline")
    p.add_argument("--device", type=device_arg, default="auto",
                   help="auto (cuda if present, else cpu), cpu, cuda[:N]")
    p.add_argument("--quick", action="store_true",
                   help="a few shapes per suite and short timing (smoke tests)")
    p.add_argument("--min-time", type=positive_float, default=None, metavar="S",
                   help="CPU: seconds of timed runs per measurement (default 0.3; quick 0.02)")
    p.add_argument("--rep-ms", type=positive_float, default=None, metavar="MS",
                   help="GPU: do_bench rep in ms (default 40; quick 10)")
    p.add_argument("--warmup-ms", type=positive_float, default=None, metavar="MS",
                   help="GPU: do_bench warm-up in ms (default 10; quick 3)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch and fastdw (default: torch's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--no-cudnn-benchmark", action="store_true",
                   help="leave torch.backends.cudnn.benchmark off (default on)")
    p.add_argument("--json", metavar="PATH", help="write all rows and metadata as JSON")
    p.add_argument("--csv", metavar="PATH", help="write all rows as CSV")
    p.add_argument("--plot", metavar="PNG", help="write speedup and bandwidth plots (PNG)")
    p.add_argument("--table", choices=("full", "summary", "none"), default="full",
                   help="what to print: the full table (default), the summary only, or nothing")
    progress = p.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="show a progress bar on stderr (default: when it is a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_false")


def _writable(path: str, parser, flag: str) -> None:
    import os

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        parser.error(f"{flag}: folder {folder} does not exist")


def run(args, parser) -> int:
    import torch

    from ..benchmark import report
    from ..benchmark.runner import BenchConfig
    from ..benchmark.runner import run as run_bench
    from ..benchmark.suites import suite_names
    from ..benchmark.timing import TimerConfig

    for flag in ("json", "csv", "plot"):
        if getattr(args, flag):
            _writable(getattr(args, flag), parser, f"--{flag}")
    suites = suite_names() if "all" in args.suite else list(dict.fromkeys(args.suite))
    passes = list(PASSES) if "all" in args.passes else list(dict.fromkeys(args.passes))
    if args.threads:
        torch.set_num_threads(args.threads)
    quick = args.quick
    timer = TimerConfig(
        min_time=args.min_time or (0.02 if quick else 0.3),
        warmup=0.01 if quick else 0.05, rounds=2 if quick else 3,
        rep_ms=args.rep_ms or (10.0 if quick else 40.0),
        warmup_ms=args.warmup_ms or (3.0 if quick else 10.0))
    cfg = BenchConfig(
        suites=suites, passes=passes, dtypes=list(dict.fromkeys(args.dtypes)),
        layouts=list(dict.fromkeys(args.layouts)), batches=args.batches,
        providers=list(dict.fromkeys(args.providers)) if args.providers else None,
        device=args.device, quick=quick, timer=timer,
        copy_bytes=(64 << 20) if quick else None, seed=args.seed,
        cudnn_benchmark=not args.no_cudnn_benchmark, progress=args.progress)
    result = run_bench(cfg)
    if args.table != "none":
        print(report.header(result))
        print()
        if args.table == "full":
            print(report.table(result))
        print(report.summary(result))
    if args.json:
        report.write_json(result, args.json)
    if args.csv:
        report.write_csv(result, args.csv)
    if args.plot:
        report.plot(result, args.plot)
    for path in (args.json, args.csv, args.plot):
        if path:
            print(f"wrote {path}", file=sys.stderr)
    return 1 if any(r["status"] != "ok" for r in result["rows"]) else 0

"""Every compiled variant of fastdw's Triton kernels, found and compiled without a GPU.

On a GPU, Triton compiles one binary per kernel, argument specialisation (pointer dtypes, 16-byte
alignment, integers divisible by 16), constexpr values and autotune config, the first time a
launch needs it. This module finds those variants for a list of calls of the three fused ops by
running the launchers of ``separable.py`` themselves on meta tensors, each kernel launch
captured instead of made, and compiles them for a GPU target (sm_90 by default) through
Triton's own JIT path: ``Autotuner.warmup`` gives every autotune config its specialisation and
cache key exactly as a launch would, and ``JITFunction.preload`` compiles each, in forked
processes. No GPU and no hand-written list: the calls come from running the code that makes
them.

    # the calls a program makes (the kernels interpreted on the CPU)
    TRITON_INTERPRET=1 python -m fastdw.triton.variants record calls.json -m pytest tests/...
    # the calls the fused provider makes over benchmark suites (fake tensors, nothing computed);
    # the options after the file are ``python -m fastdw bench``'s
    TRITON_INTERPRET=1 python -m fastdw.triton.variants suites calls.json --suite all --batch 32
    # compile every variant those calls need (TRITON_INTERPRET unset); exit 1 on any error
    python -m fastdw.triton.variants compile calls.json [more.json] [--arch 90] [--jobs N]

Calls recorded from a program replay with both values of ``torch.backends.cudnn.allow_tf32``,
which the launchers read (see CallRecorder). On a GPU machine ``compile`` also fills Triton's
cache, so the launches of these variants that follow load them instead of compiling them.
Each variant takes 1-3 s of CPU to compile. The default, ``--each specialization``, compiles
every variant a GPU would; ``combination`` one per constexpr combination and autotune config
(Variant.combination); ``cover`` a subset that still compiles every combination once and every
config with every value (``covering``); ``value`` every config and every value at least once
(``each_value``), which is what CI affords.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import runpy
import sys
import time
from typing import Dict, Iterable, List, Sequence, Tuple

import torch

from . import separable

# Triton caches the launcher of each variant under this device index.
_DEVICE = 0
# Largest shared memory a block may have (opt-in), in bytes, per compute capability (CUDA C++
# Programming Guide, "Technical Specifications per Compute Capability"); Triton refuses to load
# a kernel that needs more, which only shows when it is first launched on a GPU.
SHARED_MEMORY_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
_AUTOTUNERS = (separable._sep_fwd_kernel, separable._sep_bwd_mid_kernel,
               separable._sep_bwd_pw_kernel)
# name -> JITFunction, and name -> the constexprs its autotune configs set
KERNELS = {k.fn.__name__: k.fn for k in _AUTOTUNERS}
CONFIG_PARAMS = {k.fn.__name__: frozenset(k.configs[0].kwargs) for k in _AUTOTUNERS}


# ---- calls: what the three ops were called with ---------------------------------------------

def _describe(value):
    """A JSON-able description of one op argument (tensors by layout and dtype, not values)."""
    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "stride": list(value.stride()),
                "offset": value.storage_offset(), "dtype": str(value.dtype).split(".")[-1]}
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    return value


def _concrete(t: torch.Tensor) -> bool:
    return all(isinstance(n, int) for n in (*t.shape, *t.stride(), t.storage_offset()))


def _rebuild(value):
    """A meta tensor (or plain value) with the layout ``_describe`` recorded."""
    if isinstance(value, dict):
        size = value["offset"] + 1 + sum((n - 1) * s for n, s in zip(value["shape"],
                                                                     value["stride"]))
        if 0 in value["shape"]:
            size = value["offset"]
        storage = torch.empty(size, dtype=getattr(torch, value["dtype"]), device="meta")
        return storage.as_strided(value["shape"], value["stride"], value["offset"])
    if isinstance(value, list):
        return [_rebuild(v) for v in value]
    return value


class CallRecorder:
    """Collects the distinct calls of the interpreted fused ops (``separable.CALL_OBSERVERS``).

    The launchers also read ``torch.backends.cudnn.allow_tf32``, a process-wide switch. Each
    call keeps the values to replay it with: the one it was made with, or with ``both_tf32``
    both, for programs that may set the switch otherwise on a GPU (tests/test_separable.py
    turns it off there)."""

    def __init__(self, both_tf32: bool):
        self.both_tf32 = both_tf32
        self.calls: Dict[str, Dict] = {}

    def __call__(self, op: str, args: Sequence) -> None:
        if any(isinstance(a, torch.Tensor) and not _concrete(a) for a in args):
            return   # traced with symbolic sizes: the launch, with real sizes, comes later
        tf32 = [True, False] if self.both_tf32 else [torch.backends.cudnn.allow_tf32]
        call = {"op": op, "args": [_describe(a) for a in args], "allow_tf32": tf32}
        self.calls.setdefault(json.dumps(call, sort_keys=True), call)

    @contextlib.contextmanager
    def active(self):
        """Records while inside. Only the interpreted ops are observed: with compiled kernels
        (a GPU) the calls compile what they need as they launch, and nothing is recorded."""
        separable.CALL_OBSERVERS.append(self)
        try:
            yield self
        finally:
            separable.CALL_OBSERVERS.remove(self)

    def write(self, path: str, source: str) -> None:
        lines = ",\n".join(json.dumps(c) for c in self.calls.values())
        with open(path, "w") as f:
            f.write(f'{{"source": {json.dumps(source)}, "calls": [\n{lines}\n]}}\n')


def load_calls(paths: Iterable[str]) -> List[Dict]:
    calls: Dict[str, Dict] = {}
    for path in paths:
        with open(path) as f:
            for call in json.load(f)["calls"]:
                calls.setdefault(json.dumps(call, sort_keys=True), call)
    return list(calls.values())


def suite_calls(bench_argv: Sequence[str]) -> CallRecorder:
    """The calls ``fastdw-triton`` makes over the shapes ``python -m fastdw bench bench_argv``
    would run on a GPU, every pass through autograd as the benchmark runs it; on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from ..benchmark.bandwidth import PASSES, PASSES_BY_KIND
    from ..benchmark.providers import TritonProvider, make_tensors, to_layout
    from ..benchmark.runner import DTYPES, default_batches
    from ..benchmark.suites import cases, load_suite, suite_names
    from ..cli import build_parser

    args = build_parser().parse_args(["bench", *bench_argv])
    gpu = torch.device("cuda")
    names = suite_names() if "all" in args.suite else list(dict.fromkeys(args.suite))
    passes = list(PASSES) if "all" in args.passes else list(dict.fromkeys(args.passes))
    todo, _ = cases([load_suite(n) for n in names], args.batches or default_batches(gpu),
                    gpu.type, args.quick)
    provider, recorder = TritonProvider(), CallRecorder(both_tf32=False)
    with recorder.active(), FakeTensorMode():
        for case in todo:
            if case.shape.kind not in provider.kinds:
                continue
            for dtype in dict.fromkeys(args.dtypes):
                base = make_tensors(case, DTYPES[dtype], torch.device("cpu"), args.seed)
                for layout in dict.fromkeys(args.layouts):
                    for pass_ in passes:
                        if pass_ in PASSES_BY_KIND[case.shape.kind]:
                            provider.build(case, pass_, to_layout(base, layout))()
    return recorder


# ---- launches: what the launchers make of the calls -------------------------------------------

@dataclasses.dataclass
class Launch:
    kernel: object      # the kernel's triton.runtime.Autotuner
    args: tuple
    kwargs: dict


@contextlib.contextmanager
def _captured_launches():
    """Inside, the launchers of separable.py run but append their kernel launches to the list
    yielded instead of making them."""
    launches: List[Launch] = []

    def wrap_triton(kernel):
        class Grid:
            def __getitem__(self, grid):
                return lambda *args, **kwargs: launches.append(Launch(kernel, args, kwargs))
        return Grid()

    saved = separable.wrap_triton
    separable.wrap_triton = wrap_triton
    try:
        yield launches
    finally:
        separable.wrap_triton = saved


def launches_for(calls: Iterable[Dict]) -> List[Launch]:
    """The kernel launches the GPU launchers make for ``calls``, each under its values of
    ``torch.backends.cudnn.allow_tf32``; on meta tensors."""
    if separable._INTERPRETING:
        raise RuntimeError("the launches of the compiled kernels need TRITON_INTERPRET unset")
    saved = torch.backends.cudnn.allow_tf32
    try:
        with _captured_launches() as launches:
            for call in calls:
                op = getattr(torch.ops.fastdw, call["op"].split("::")[1]).default
                for tf32 in call["allow_tf32"]:
                    torch.backends.cudnn.allow_tf32 = tf32
                    op(*[_rebuild(a) for a in call["args"]])
    finally:
        torch.backends.cudnn.allow_tf32 = saved
    return launches


# ---- variants: what Triton compiles for the launches ------------------------------------------

@dataclasses.dataclass
class Variant:
    kernel: str
    key: str             # Triton's in-memory cache key: argument specialisation + options
    data: str            # Triton's specialization data (JSON), what JITFunction.preload takes

    def config_and_values(self) -> Tuple[str, Dict[str, str]]:
        """(its autotune config, {argument: its type or value} for the rest), every
        specialisation Triton made included."""
        d = self.describe()
        own = CONFIG_PARAMS[self.kernel]
        config = json.dumps([d["num_warps"], d["num_stages"],
                             sorted((k, v) for k, v in d["constexprs"].items() if k in own)])
        values = {f"type {k}": v for k, v in d["signature"].items()}
        values.update({k: json.dumps(v) for k, v in d["constexprs"].items() if k not in own})
        return config, values

    def combination(self, with_config: bool = True) -> str:
        """What the launcher chose: the kernel, its pointer arguments' dtypes (or None), its
        constexpr parameters and (``with_config``) autotune config. Not Triton's own
        specialisations of the other arguments (integers equal to 1 made constexprs, divisible
        by 16, 16-byte aligned pointers), which follow from the tensors' sizes."""
        d = self.describe()
        declared = {p.name for p in KERNELS[self.kernel].params if p.is_constexpr}
        if not with_config:
            declared -= CONFIG_PARAMS[self.kernel]
        pointers = {k: t for k, t in d["signature"].items() if t.startswith("*")}
        chosen = {k: v for k, v in d["constexprs"].items() if k in declared or v is None}
        config = [d["num_warps"], d["num_stages"]] if with_config else []
        return json.dumps([self.kernel, pointers, chosen, config], sort_keys=True)

    def describe(self) -> Dict:
        data = json.loads(self.data)
        consts = {}
        for path, value in zip(data["constant_keys"], data["constant_vals"]):
            name = KERNELS[self.kernel].arg_names[path[0]]
            consts[name] = value["constexpr"] if isinstance(value, dict) else value
        options = data["options"]
        return {"kernel": self.kernel, "constexprs": consts,
                "num_warps": options["num_warps"], "num_stages": options["num_stages"],
                "signature": {k: v for k, v in data["signature"].items() if v != "constexpr"}}


class _OfflineCuda:
    """The part of a Triton driver that compiling needs: a CUDA target, no device."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget
        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return _DEVICE

    def get_current_stream(self, device=None):
        return 0


@contextlib.contextmanager
def target_driver(arch: int):
    """Triton's active driver, inside: one that names the target ``sm_<arch>`` and has no
    device. Used on a GPU machine too: the compiles run in forked processes, which must not
    touch CUDA, and the GPU's own driver names the same target (so the same cache keys)."""
    from triton.runtime.driver import driver

    saved = driver._active
    driver.set_active(_OfflineCuda(arch))
    try:
        yield
    finally:
        driver._active = saved


def variants_for(launches: Iterable[Launch]) -> List[Variant]:
    """The distinct variants Triton compiles for ``launches`` (each autotune config of each),
    found through ``Autotuner.warmup`` with a cache hook that stops every compile."""
    from triton import knobs

    found: Dict[Tuple[str, str], Variant] = {}

    def hook(*, key, fn, compile, **_):
        kernel = fn.jit_function.fn.__name__
        found.setdefault((kernel, str(key)),
                         Variant(kernel, str(key), compile["specialization_data"]))
        return True   # handled: Triton compiles nothing

    saved = knobs.runtime.jit_cache_hook
    knobs.runtime.jit_cache_hook = hook
    try:
        for launch in launches:
            launch.kernel.warmup(*launch.args, grid=(1,), **launch.kwargs)
    finally:
        knobs.runtime.jit_cache_hook = saved
    return list(found.values())


def one_per_combination(variants: Iterable[Variant]) -> List[Variant]:
    """The first variant of each combination (see Variant.combination), in order."""
    first: Dict[str, Variant] = {}
    for v in variants:
        first.setdefault(v.combination(), v)
    return list(first.values())


def covering(variants: Sequence[Variant]) -> List[Variant]:
    """A subset of ``variants`` that compiles every combination the launchers made, less its
    autotune config, at least once, and every autotune config of each kernel with every value
    of every argument type and constexpr (Triton's specialisations included) it was launched
    with: pairwise coverage, picked greedily. Much smaller than every combination with every
    config (one_per_combination), for CI; a compile error that needs two particular values
    together in one particular config can escape it."""
    variants = list(variants)
    pairs = []
    for v in variants:
        config, values = v.config_and_values()
        pairs.append({(v.kernel, config, k, x) for k, x in values.items()})
    chosen = set({v.combination(with_config=False): i
                  for i, v in reversed(list(enumerate(variants)))}.values())
    uncovered = set().union(*pairs) - set().union(*(pairs[i] for i in chosen))
    while uncovered:
        best = max(range(len(variants)), key=lambda i: len(pairs[i] & uncovered))
        chosen.add(best)
        uncovered -= pairs[best]
    return [variants[i] for i in sorted(chosen)]


def each_value(variants: Sequence[Variant]) -> List[Variant]:
    """A subset of ``variants`` in which every autotune config of each kernel, and every value
    of every argument type and constexpr (Triton's specialisations included) each kernel was
    launched with, is compiled at least once: one-wise coverage, picked greedily. Smaller than
    ``covering`` (which pairs them); what CI's 2-core budget affords."""
    variants = list(variants)
    items = []
    for v in variants:
        config, values = v.config_and_values()
        items.append({(v.kernel, "config", config)}
                     | {(v.kernel, k, x) for k, x in values.items()})
    uncovered, chosen = set().union(*items), []
    while uncovered:
        best = max(range(len(variants)), key=lambda i: len(items[i] & uncovered))
        chosen.append(best)
        uncovered -= items[best]
    return [variants[i] for i in sorted(chosen)]


def _compile(variant: Variant) -> Dict:
    """Compiles one variant for the active target; a dict for the report."""
    t0 = time.perf_counter()
    out = variant.describe()
    try:
        compiled = KERNELS[variant.kernel].preload(variant.data)
        if hasattr(compiled, "result"):
            compiled = compiled.result()
        out.update(shared=compiled.metadata.shared, error=None)
    except Exception as e:  # noqa: BLE001 - every failure is reported, then fails the run
        out.update(shared=None, error=f"{type(e).__name__}: {e}")
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


_WORK: List[Variant] = []


def _compile_nth(i: int) -> Dict:
    return _compile(_WORK[i])


def compile_variants(variants: Sequence[Variant], jobs: int) -> List[Dict]:
    """Compiles every variant, ``jobs`` processes at a time (forked: they inherit the list)."""
    if jobs <= 1 or len(variants) <= 1:
        return [_compile(v) for v in variants]
    import multiprocessing

    _WORK[:] = variants
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        return pool.map(_compile_nth, range(len(variants)), chunksize=1)


def check_limits(results: Sequence[Dict], arch: int) -> None:
    """Marks the variants that compiled but cannot be loaded on sm_<arch> as ``unusable``.
    Not errors: on a GPU the autotuner gives such a config an infinite time and picks another
    (triton.runtime.autotuner, OutOfResources), but each still costs a compile per shape."""
    limit = SHARED_MEMORY_LIMIT.get(arch)
    for r in results:
        r["unusable"] = None
        if r["error"] is None and limit is not None and r["shared"] > limit:
            r["unusable"] = f"needs {r['shared']} B of shared memory, sm_{arch} has {limit}"
        if r["error"] is None and r["num_warps"] * 32 > 1024:
            r["unusable"] = f"{r['num_warps']} warps: more than 1024 threads per block"


def summary(results: Sequence[Dict], arch: int, wall: float) -> str:
    lines = [f"{'kernel':22s} {'variants':>8s} {'failed':>6s} {'unusable':>8s} "
             f"{'max shared B':>12s} {'compile s':>9s}"]
    for kernel in KERNELS:
        mine = [r for r in results if r["kernel"] == kernel]
        shared = [r["shared"] for r in mine if r["shared"] is not None]
        lines.append(f"{kernel:22s} {len(mine):8d} {sum(bool(r['error']) for r in mine):6d} "
                     f"{sum(bool(r['unusable']) for r in mine):8d} "
                     f"{max(shared, default=0):12d} {sum(r['seconds'] for r in mine):9.1f}")
    failed = [r for r in results if r["error"]]
    unusable = [r for r in results if r["unusable"]]
    lines.append(f"triton variants for sm_{arch}: {len(results)} compiled, {len(failed)} failed, "
                 f"{len(unusable)} unusable, in {wall:.0f} s wall, "
                 f"{sum(r['seconds'] for r in results):.0f} s of compiling")
    for r in failed[:10]:
        lines.append(f"FAILED {r['kernel']} {r['constexprs']} num_warps={r['num_warps']}: "
                     f"{r['error'][:400]}")
    for r in unusable[:5]:
        lines.append(f"unusable {r['kernel']} {r['signature'].get('x_ptr')} {r['constexprs']} "
                     f"num_warps={r['num_warps']}: {r['unusable']}")
    return "\n".join(lines)


# ---- command line -----------------------------------------------------------------------------

def _record(out: str, target: Sequence[str]) -> int:
    """Runs ``target`` (``-m module args...`` or ``script.py args...``) with the calls
    recorded; writes them even when it fails; returns its exit code."""
    if not target:
        raise SystemExit("record: give the program to run: -m MODULE [ARGS] or SCRIPT [ARGS]")
    recorder = CallRecorder(both_tf32=True)
    if not separable._INTERPRETING:
        print("variants record: compiled kernels compile what they need as they launch; no "
              f"calls recorded in {out}", file=sys.stderr)
    module = target[0] == "-m"
    name = target[1] if module else target[0]
    saved_argv = sys.argv
    sys.argv = [name, *target[2 if module else 1:]]
    code = 0
    try:
        with recorder.active():
            if module:
                runpy.run_module(name, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(name, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved_argv
        recorder.write(out, " ".join(target))
    return code


def _suites_in_interpreter(bench_argv: Sequence[str], path: str) -> None:
    """``suites`` in a child process: it needs the interpreted kernels, this one the compiled."""
    import subprocess

    env = dict(os.environ, TRITON_INTERPRET="1")
    subprocess.run([sys.executable, "-m", __spec__.name, "suites", path, *bench_argv], env=env,
                   check=True)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 2 and argv[0] == "record":
        return _record(argv[1], argv[2:])
    if len(argv) >= 2 and argv[0] == "suites":
        recorder = suite_calls(argv[2:])
        recorder.write(argv[1], "suites " + " ".join(argv[2:]))
        print(f"variants suites: {len(recorder.calls)} distinct calls -> {argv[1]}",
              file=sys.stderr)
        return 0
    p = argparse.ArgumentParser(prog="python -m fastdw.triton.variants compile",
                                description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["compile"])
    p.add_argument("calls", nargs="*", help="files written by record or suites")
    p.add_argument("--arch", type=int, default=90, help="compute capability x10 (default 90)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes")
    p.add_argument("--each", choices=["specialization", "combination", "cover", "value"],
                   default="specialization",
                   help="compile every variant a GPU would (default; on a GPU this fills "
                        "Triton's cache), one per constexpr combination and config, the "
                        "pairwise covering subset of those (covering()), or the one-wise one "
                        "(each_value())")
    p.add_argument("--json", help="write every variant's result here")
    p.add_argument("--bench", nargs=argparse.REMAINDER, default=None, metavar="BENCH_ARGS",
                   help="last: also the calls of `suites` with these `fastdw bench` options")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    paths = list(args.calls)
    if args.bench is not None:
        import tempfile
        paths.append(os.path.join(tempfile.mkdtemp(), "calls_suites.json"))
        _suites_in_interpreter(args.bench, paths[-1])
    calls = load_calls(paths)
    with target_driver(args.arch):
        launches = launches_for(calls)
        variants = variants_for(launches)
        combinations = one_per_combination(variants)
        cover = covering(variants)
        values = each_value(variants)
        todo = {"specialization": variants, "combination": combinations,
                "cover": cover, "value": values}[args.each]
        counts = {"calls": len(calls), "launches": len(launches),
                  "specializations": len(variants), "combinations": len(combinations),
                  "cover": len(cover), "value": len(values)}
        print("variants compile: " + ", ".join(f"{v} {k}" for k, v in counts.items())
              + f"; compiling {len(todo)} for sm_{args.arch}, {args.jobs} at a time",
              file=sys.stderr, flush=True)
        results = compile_variants(todo, args.jobs)
    check_limits(results, args.arch)
    if torch.cuda.is_available() and torch.cuda.get_device_capability() != divmod(args.arch, 10):
        print(f"variants compile: the visible GPU is not sm_{args.arch}: these variants are not "
              "the ones it launches", file=sys.stderr)
    wall = time.perf_counter() - t0
    print(summary(results, args.arch, wall))
    if args.json:
        with open(args.json, "w") as f:
            configs = {k.fn.__name__: len(k.configs) for k in _AUTOTUNERS}
            json.dump(dict(counts, arch=args.arch, each=args.each, configs=configs,
                           seconds=round(wall, 1), variants=results), f, indent=0)
    return 1 if not results or any(r["error"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Which CPU kernel runs a depthwise convolution, and why: the Python face of the planner in
``csrc/cpu/plan.h``, the way ``torch._C._select_conv_backend`` exposes PyTorch's choice.

Kernels (``kernels()``; ``csrc/cpu/README.md`` has the table of where each wins):

``aten``            PyTorch's own convolution (oneDNN, or ATen's native kernels): a plan may
                    pick it where it measured faster, so a converted layer is never slower
``nchw_planes``     NCHW, any geometry (padded, stride-phase-split planes)
``nhwc_pixels``     channels_last, any geometry (per pixel over in-bounds taps)
``nhwc_tiles``      channels_last forward: register tiles read in place (3x3/5x5/7x7, s1/s2)
``nhwc_windows``    the shapes of ``nhwc_tiles``: one channel block in sliding windows
``channel_blocks``  multiplier 1, either layout: 16-channel blocks of rows converted once

How the choice is made, first match wins:

1. forced: ``FASTDW_CPU_KERNEL=<name>`` in the environment (read once at import) or
   ``with fastdw.planner.force(kernel=...)``: that kernel wherever it applies (the rules where it
   does not, with a note). ``kernel="fastdw"`` keeps the choice but never picks ``aten``.
   ``FASTDW_CPU_ISA`` / ``force(isa=...)`` picks the ISA copy (generic, avx2, avx512,
   avx512_bf16; lowered to what the CPU runs).
2. measured: plans from a plan file (``python -m fastdw tune``, loaded when fastdw is
   imported; see
   ``plan_file()``) and, with benchmark mode on (``fastdw.backends.cpu.benchmark = True`` or
   ``FASTDW_CPU_BENCHMARK=1``), the first call of each new problem (geometry, dtype, layout,
   pass, weights finite or not, thread count) times every applicable kernel and keeps the
   fastest for the process, ties going to the rules' choice and then to the order above.
3. rules: the rule table in ``csrc/cpu/plan.cpp``.

Determinism: every kernel is deterministic and gives the same bits for any thread count. With
the rules (the default) the kernel depends on the problem only, so results are bitwise
reproducible across runs and thread counts. Benchmark mode and plan files choose by
measurement: the kernel, and so the last bits of a result, can then differ between processes,
machines and thread counts (as with ``torch.backends.cudnn.benchmark``). ``aten`` is never a
candidate for backward-weight, where PyTorch's sums need not be the same bits for every thread
count.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
from typing import Dict, Iterator, List, Optional, Tuple

import torch

from . import _args, geometry
from . import ops  # noqa: F401  (loads the compiled library)
from . import _C
from ._layouts import kernel_memory_format

PASSES = ("fwd", "bwd_input", "bwd_weight")
_DTYPE_NAMES = {torch.float64: "float64", torch.float32: "float32",
                torch.bfloat16: "bfloat16", torch.float16: "float16"}
_OWN = "fastdw"


@dataclasses.dataclass(frozen=True)
class Plan:
    """One pass of one convolution as the planner runs it.

    ``kernel``: a name of ``kernels()``; ``isa``: the ISA copy (meaningless for ``aten``);
    ``relayouts``: the copies made around the kernel (it runs in the other memory format, or
    backward-input runs as the forward conv of grad_output with the flipped kernel); ``reason``:
    the rule or measurement that chose it; ``source``: ``rules``, ``forced``, ``tuned`` or
    ``plan file``; ``note``: why a forced kernel did not apply, else empty."""
    kernel: str
    isa: str
    relayouts: Tuple[str, ...]
    reason: str
    source: str
    note: str = ""

    def __str__(self):
        moves = f" via {', '.join(self.relayouts)}" if self.relayouts else ""
        note = f" ({self.note})" if self.note else ""
        return f"{self.kernel} [{self.isa}]{moves}: {self.reason} ({self.source}){note}"


def kernels() -> Dict[str, str]:
    """``{name: description}`` of the CPU kernels, in the planner's order."""
    return dict(_C.cpu_kernels())


def isas() -> Dict[str, bool]:
    """``{name: whether this CPU runs it}`` for every ISA copy the kernels are built in."""
    return {name: ok for name, ok, _ in _C.cpu_isas()}


def _layout_is_channels_last(t: torch.Tensor) -> bool:
    return kernel_memory_format(t) == torch.channels_last


def problem(input: torch.Tensor, weight: torch.Tensor, stride=1, padding=0, dilation=1,
            pass_: str = "fwd", grad_output: Optional[torch.Tensor] = None,
            threads: Optional[int] = None) -> tuple:
    """The planner's view of one pass (a tuple, see ``csrc/module.cpp``): geometry as the op sees
    it (``padding='same'`` with an even kernel pads the input first), dtype, the layout the op
    runs in (``grad_output``'s for backward-input, else the input's), whether the weights are
    finite, and the thread count (default: torch's)."""
    if pass_ not in PASSES:
        raise ValueError(f"fastdw: pass_ must be one of {PASSES}, got {pass_!r}")
    if isinstance(input, torch.Tensor) and input.dim() == 3:
        input = input.unsqueeze(0)
    stride, padding, dilation, extra = _args.conv_args(input, weight, None, stride, padding,
                                                       dilation)
    n, c, h, w = input.shape
    h, w = h + extra[0], w + extra[1]
    kh, kw = weight.shape[2], weight.shape[3]
    out = geometry.output_hw((h, w), (kh, kw), stride, padding, dilation)
    layout_of = grad_output if (pass_ == "bwd_input" and grad_output is not None) else input
    finite = pass_ == "bwd_weight" or bool(torch.isfinite(weight).all())
    return (n, c, weight.shape[0] // c, h, w, out[0], out[1], kh, kw, stride[0], stride[1],
            padding[0], padding[1], dilation[0], dilation[1],
            _layout_is_channels_last(layout_of), _DTYPE_NAMES[input.dtype], pass_, finite,
            threads or torch.get_num_threads())


def _plan_of(prob: tuple) -> Plan:
    kernel, isa, source, reason, note, runs_cl, flipped = _C.cpu_plan(prob)
    channels_last = prob[15]
    relayouts = []
    if flipped:
        relayouts.append("forward conv of grad_output with the flipped kernel")
    if kernel != "aten" and runs_cl != channels_last:
        there = "channels_last" if runs_cl else "contiguous"
        back = "contiguous" if runs_cl else "channels_last"
        relayouts += [f"inputs to {there}", f"result back to {back}"]
    return Plan(kernel, isa, tuple(relayouts), reason, source, note)


def explain(input: torch.Tensor, weight: torch.Tensor, stride=1, padding=0, dilation=1,
            pass_: str = "fwd", grad_output: Optional[torch.Tensor] = None) -> Plan:
    """The plan fastdw's CPU op would follow for ``depthwise_conv2d(input, weight, stride=...,
    padding=..., dilation=...)`` (arguments as there) now, for ``pass_`` in ``fwd``,
    ``bwd_input``, ``bwd_weight``. Nothing is run: with benchmark mode on, a problem not yet
    measured shows the rules' choice (it is measured at its first call).

    >>> x = torch.randn(8, 32, 112, 112).contiguous(memory_format=torch.channels_last)
    >>> print(fastdw.explain(x, torch.randn(32, 1, 3, 3), padding=1))
    """
    return _plan_of(problem(input, weight, stride, padding, dilation, pass_, grad_output))


def unsupported(kernel: str, prob: tuple) -> Optional[str]:
    """None if ``kernel`` can run the problem tuple ``prob``, else why not."""
    return _C.cpu_unsupported(kernel, prob)


@contextlib.contextmanager
def force(kernel: Optional[str] = None, isa: Optional[str] = None) -> Iterator[None]:
    """Within the block, the CPU ops use ``kernel`` wherever it applies (``"fastdw"``: fastdw's
    own kernels only, never ``aten``) and the ISA copy ``isa`` (lowered to what the CPU runs);
    ``None`` keeps the current setting, ``""`` clears it (the planner decides). Process-wide, like ``torch.backends`` flags: not for use
    from several threads at once. Raises ValueError for an unknown name."""
    if kernel and kernel != _OWN and kernel not in kernels():
        raise ValueError(f"fastdw: no CPU kernel named {kernel!r}; "
                         f"choose from {sorted(kernels()) + [_OWN]}")
    if isa and isa not in isas():
        raise ValueError(f"fastdw: no ISA copy named {isa!r}; choose from {list(isas())}")
    old_kernel, old_isa = _C.cpu_forced()
    _C.cpu_set_forced(old_kernel if kernel is None else kernel, old_isa if isa is None else isa)
    try:
        yield
    finally:
        _C.cpu_set_forced(old_kernel, old_isa)


def with_own_kernels(fn):
    """``fn`` wrapped to run with fastdw's own kernels only (never ``aten``): ``force(kernel=
    "fastdw")`` at the cost of two calls into the library, for timing loops."""
    def run(*args, **kwargs):
        old_kernel, old_isa = _C.cpu_forced()
        _C.cpu_set_forced(_OWN, old_isa)
        try:
            return fn(*args, **kwargs)
        finally:
            _C.cpu_set_forced(old_kernel, old_isa)
    return run


class CpuBackend:
    """``fastdw.backends.cpu``: switches of the CPU planner, like ``torch.backends.cudnn``.

    ``benchmark``: measure the applicable kernels on the first call of each new problem and keep
    the fastest (default ``False``, or ``FASTDW_CPU_BENCHMARK=1``)."""

    @property
    def benchmark(self) -> bool:
        return _C.cpu_benchmark()

    @benchmark.setter
    def benchmark(self, on: bool) -> None:
        _C.cpu_set_benchmark(bool(on))

    @property
    def isa(self) -> str:
        """The ISA copy the kernels run (the best this CPU has, or the forced one)."""
        return _C.cpu_isa()


# ---- plan files --------------------------------------------------------------------------------

def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key() -> Dict[str, str]:
    """What a plan file is valid for: CPU model, the best ISA copy it runs, torch and fastdw
    versions. A file made under another key is never loaded."""
    from . import __version__
    best = [name for name, ok in isas().items() if ok][-1]
    return {"cpu": cpu_model(), "isa": best, "torch": torch.__version__, "fastdw": __version__}


def plan_file() -> Optional[str]:
    """Where this machine's plan file lives: ``$FASTDW_CPU_PLAN_FILE`` if set (``none`` turns
    plan files off), else ``$XDG_CACHE_HOME/fastdw`` (default ``~/.cache/fastdw``) /
    ``cpu-plans-<hash of machine_key()>.json``. Delete it (or run ``python -m fastdw tune
    --clear``) to go back to the rules."""
    env = os.environ.get("FASTDW_CPU_PLAN_FILE")
    if env is not None:
        return None if env.lower() in ("", "none", "0") else env
    digest = hashlib.sha1(json.dumps(machine_key(), sort_keys=True).encode()).hexdigest()[:12]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastdw", f"cpu-plans-{digest}.json")


def cached_plans() -> List[dict]:
    """The plans measured or loaded in this process, as plain dicts (a plan file's entries)."""
    out = []
    for prob, isa, allow_aten, kernel, from_file, best_us in _C.cpu_plan_cache():
        out.append({"problem": list(prob), "isa": isa, "allow_aten": allow_aten,
                    "kernel": kernel, "from_file": from_file, "best_us": best_us})
    return out


def save_plans(path: Optional[str] = None) -> str:
    """Writes this process's measured plans, merged over the file's own, to the plan file (or
    ``path``); returns the path."""
    path = path or plan_file()
    if path is None:
        raise ValueError("fastdw: plan files are turned off (FASTDW_CPU_PLAN_FILE=none)")
    entries = {json.dumps([e["problem"], e["isa"], e["allow_aten"]]): e
               for e in _read(path) + cached_plans()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"machine": machine_key(), "plans": [dict(e, from_file=True)
                                                       for e in entries.values()]}, f, indent=1)
        f.write("\n")
    return path


def _read(path: str) -> List[dict]:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return []
    if data.get("machine") != machine_key():
        return []
    return list(data.get("plans", []))


def load_plans(path: Optional[str] = None) -> int:
    """Loads a plan file's plans into this process (done at import for ``plan_file()``); returns
    how many. A file made for another machine key, or unreadable, loads nothing."""
    path = path or plan_file()
    if path is None:
        return 0
    entries = _read(path)
    for e in entries:
        _C.cpu_plan_cache_insert((tuple(e["problem"]), e["isa"], e["allow_aten"], e["kernel"],
                                  True, float(e.get("best_us", 0.0))))
    return len(entries)


def clear_plans(delete_file: bool = False) -> None:
    """Forgets every measured or loaded plan in this process (and deletes the plan file)."""
    _C.cpu_plan_cache_clear()
    path = plan_file()
    if delete_file and path and os.path.exists(path):
        os.remove(path)


def fma_rate(seconds: float = 0.3) -> float:
    """This machine's measured float32 multiply-add rate (per second, every torch thread, the ISA
    copy the kernels use): the compute roof of the benchmark's roofline."""
    return _C.cpu_fma_rate(seconds)


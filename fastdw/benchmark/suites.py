"""Shape suites: JSON files shipped as package data in ``fastdw/bench_suites/``.

A suite file holds ``name``, ``description``, ``kind`` (the default for its shapes:
``depthwise`` or ``separable``), ``quick`` (indices of the shapes ``--quick`` keeps) and
``shapes``. A shape is ``c``, ``h`` and optionally ``w`` (default ``h``), ``k`` or ``kh``/``kw``,
``stride``, ``padding`` (default ``k // 2`` per axis), ``dilation``, ``m`` (depth multiplier),
``n`` (a fixed batch that overrides ``--batch``), ``devices`` (where it may run), ``kind``,
and for separable shapes ``c_out`` and ``activation``.
"""
from __future__ import annotations

import dataclasses
import json
from importlib import resources
from typing import Dict, List, Optional, Sequence, Tuple

from ..geometry import output_hw

Pair = Tuple[int, int]

KINDS = ("depthwise", "separable")
_SHAPE_KEYS = {"c", "h", "w", "k", "kh", "kw", "stride", "padding", "dilation", "m", "n",
               "devices", "kind", "c_out", "activation", "bias", "name"}
_SUITE_KEYS = {"name", "source", "description", "kind", "quick", "shapes"}


def _pair(value, what: str) -> Pair:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return (value[0], value[1])
    raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Shape:
    """One layer of a suite, without its batch size (unless the suite fixes it)."""
    suite: str
    kind: str
    c: int
    h: int
    w: int
    kh: int
    kw: int
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    m: int = 1
    n: Optional[int] = None
    c_out: Optional[int] = None
    activation: Optional[str] = None
    bias: bool = True
    devices: Optional[Tuple[str, ...]] = None
    name: str = ""

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        hw = f"{self.h}" if self.h == self.w else f"{self.h}x{self.w}"
        k = f"k{self.kh}" if self.kh == self.kw else f"k{self.kh}x{self.kw}"
        s = f" s{self.stride[0]}" if self.stride[0] == self.stride[1] else f" s{self.stride}"
        if self.kind == "separable":
            text = f"{self.c}->{self.c_out}@{hw} {k}{s}"
            return text + (f" {self.activation}" if self.activation else "")
        text = f"{self.c}@{hw} {k}{s}"
        if self.padding != (self.kh // 2, self.kw // 2):
            text += f" p{self.padding[0]}" if self.padding[0] == self.padding[1] \
                else f" p{self.padding}"
        if self.dilation != (1, 1):
            text += f" d{self.dilation[0]}"
        if self.m != 1:
            text += f" m{self.m}"
        return text

    @property
    def out_hw(self) -> Pair:
        return output_hw((self.h, self.w), (self.kh, self.kw), self.stride, self.padding,
                         self.dilation)

    @property
    def channels_out(self) -> int:
        """Channels of the op's output (the pointwise output for separable shapes)."""
        return self.c_out if self.kind == "separable" else self.c * self.m

    def runs_on(self, device_type: str) -> bool:
        return self.devices is None or device_type in self.devices


@dataclasses.dataclass(frozen=True)
class Case:
    """A shape with its batch size: what one row of results is about."""
    shape: Shape
    n: int

    @property
    def key(self) -> Tuple:
        return (self.shape, self.n)


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    description: str
    shapes: Tuple[Shape, ...]
    quick: Tuple[int, ...]

    def select(self, quick: bool) -> List[Shape]:
        return [self.shapes[i] for i in self.quick] if quick else list(self.shapes)


def _parse_shape(suite: str, default_kind: str, raw: Dict, index: int) -> Shape:
    where = f"suite {suite!r}, shape #{index}"
    unknown = set(raw) - _SHAPE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    kind = raw.get("kind", default_kind)
    if kind not in KINDS:
        raise ValueError(f"{where}: kind must be one of {KINDS}, got {kind!r}")
    try:
        c, h = int(raw["c"]), int(raw["h"])
    except KeyError as e:
        raise ValueError(f"{where}: missing {e}") from None
    w = int(raw.get("w", h))
    if "k" in raw:
        kh, kw = _pair(raw["k"], f"{where}: k")
    else:
        kh, kw = int(raw["kh"]), int(raw["kw"])
    padding = _pair(raw["padding"], f"{where}: padding") if "padding" in raw else (kh // 2, kw // 2)
    c_out = raw.get("c_out")
    if kind == "separable" and (c_out is None or raw.get("bias", True) is not True):
        raise ValueError(f"{where}: separable shapes need c_out, and have biases")
    devices = raw.get("devices")
    shape = Shape(
        suite=suite, kind=kind, c=c, h=h, w=w, kh=kh, kw=kw,
        stride=_pair(raw.get("stride", 1), f"{where}: stride"), padding=padding,
        dilation=_pair(raw.get("dilation", 1), f"{where}: dilation"), m=int(raw.get("m", 1)),
        n=raw.get("n"), c_out=c_out, activation=raw.get("activation"),
        bias=bool(raw.get("bias", True)), devices=tuple(devices) if devices else None,
        name=raw.get("name", ""))
    if min(shape.out_hw) <= 0:
        raise ValueError(f"{where}: empty output for {shape.label}")
    return shape


def _suite_files():
    return resources.files("fastdw").joinpath("bench_suites")


def suite_names() -> List[str]:
    """Names of the suites shipped with the package, sorted."""
    return sorted(p.name[:-5] for p in _suite_files().iterdir() if p.name.endswith(".json"))


def load_suite(name: str) -> Suite:
    path = _suite_files().joinpath(f"{name}.json")
    if not path.is_file():
        raise ValueError(f"no benchmark suite {name!r}; available: {', '.join(suite_names())}")
    raw = json.loads(path.read_text())
    unknown = set(raw) - _SUITE_KEYS
    if unknown:
        raise ValueError(f"suite {name!r}: unknown keys {sorted(unknown)}")
    kind = raw.get("kind", "depthwise")
    shapes = tuple(_parse_shape(name, kind, s, i) for i, s in enumerate(raw["shapes"]))
    quick = tuple(raw.get("quick", range(min(2, len(shapes)))))
    if any(not 0 <= i < len(shapes) for i in quick):
        raise ValueError(f"suite {name!r}: quick indices {quick} out of range")
    return Suite(name=raw.get("name", name), description=raw.get("description", ""),
                 shapes=shapes, quick=quick)


def cases(suites: Sequence[Suite], batches: Sequence[int], device_type: str, quick: bool
          ) -> Tuple[List[Case], List[str]]:
    """The cases to run, in order, and a note for each shape left out on this device."""
    out: List[Case] = []
    skipped: List[str] = []
    for suite in suites:
        for shape in suite.select(quick):
            if not shape.runs_on(device_type):
                where = "/".join(shape.devices)
                skipped.append(f"{suite.name}: {shape.label} runs only on {where}")
                continue
            for n in ([shape.n] if shape.n is not None else batches):
                case = Case(shape, n)
                if case not in out:
                    out.append(case)
    return out, skipped

"""What ``convert`` and ``revert`` share: walking a module tree, and their reports."""
from __future__ import annotations

import dataclasses
from typing import List, Tuple

import torch.nn as nn


@dataclasses.dataclass(frozen=True)
class Entry:
    """One line of a report: the module's qualified name (``""`` for the root), its type, and
    what happened or why not."""
    name: str
    module: str
    detail: str


def section():
    """A report field: a list of ``Entry``, empty to begin with."""
    return dataclasses.field(default_factory=list)


class Report:
    """Base of ConversionReport and RevertReport (dataclasses whose fields are lists of
    ``Entry``): ``summary()`` fills ``SUMMARY`` with each section's count; ``str()`` is the
    summary line, then each non-empty section, one entry a line, in ``SECTIONS`` order."""
    SECTIONS: Tuple[str, ...] = ()
    SUMMARY = ""

    def summary(self) -> str:
        return self.SUMMARY.format(**{name: len(getattr(self, name)) for name in self.SECTIONS})

    def __str__(self) -> str:
        lines = [self.summary()]
        for title in self.SECTIONS:
            entries: List[Entry] = getattr(self, title)
            if entries:
                lines.append(f"{title}:")
                width = max(len(e.name or "<root>") for e in entries)
                lines += [f"  {(e.name or '<root>'):<{width}}  {e.module:<20}  {e.detail}"
                          for e in entries]
        return "\n".join(lines)


def join(prefix: str, name: str) -> str:
    """The qualified name of child ``name`` of the module named ``prefix``."""
    return f"{prefix}.{name}" if prefix else name


def children(module: nn.Module):
    """(key, child) for every registered child, *including* repeats of one instance (which
    ``named_children`` drops): ``nn.Sequential(conv, act, conv2, act)`` runs ``act`` twice."""
    return [(k, c) for k, c in module._modules.items() if c is not None]


def has_hooks(module: nn.Module) -> bool:
    """Whether hooks are registered on ``module`` (replacing it would drop them)."""
    return any((module._forward_hooks, module._forward_pre_hooks, module._backward_hooks,
                module._backward_pre_hooks))

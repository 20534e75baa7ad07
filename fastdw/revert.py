"""``fastdw.revert``: back from fastdw modules to stock PyTorch modules.

    model, report = fastdw.revert(model)   # nn.Conv2d / nn.Sequential only, same weights
    print(report)

For tools that know only stock modules (quantization mappings keyed on ``type(m) is
nn.Conv2d``, FLOP counters, other runtimes' converters). ``convert`` then ``revert`` gives back
the stock model: the same module types at the same names and the same state_dict; outputs are
bitwise equal because the same PyTorch kernels run again.
"""
from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch.nn as nn
from torch.nn.utils import parametrize

from .activations import ACTIVATIONS
from ._surgery import Entry, Report, children, has_hooks, join, section
from .nn import DepthwiseConv2d, DepthwiseSeparableConv2d

__all__ = ["revert", "RevertReport"]



@dataclasses.dataclass
class RevertReport(Report):
    """What ``revert`` did. ``reverted``: ``DepthwiseConv2d`` now ``nn.Conv2d``; ``unfused``:
    ``DepthwiseSeparableConv2d`` now ``nn.Sequential(depthwise, [activation], pointwise)``, and
    what of the original chain that cannot bring back; ``skipped``: fastdw modules left as they
    are, with the reason."""
    reverted: List[Entry] = section()
    unfused: List[Entry] = section()
    skipped: List[Entry] = section()

    SECTIONS = ("reverted", "unfused", "skipped")
    SUMMARY = "fastdw.revert: reverted {reverted}, unfused {unfused}, skipped {skipped}"


def _keeps_forward(module: nn.Module) -> Optional[str]:
    """Why a stock module could not stand in for ``module``, or None."""
    if type(module) not in (DepthwiseConv2d, DepthwiseSeparableConv2d):
        return f"subclass {type(module).__qualname__} may change forward"
    parts = [module] if isinstance(module, DepthwiseConv2d) else \
        [module, module.depthwise, module.pointwise]
    for part in parts:
        if has_hooks(part):
            return "has forward/backward hooks that a new module would not carry"
        if parametrize.is_parametrized(part):
            return "parametrized (torch.nn.utils.parametrize); the parametrization would be lost"
    return None


def _unfuse(module: DepthwiseSeparableConv2d) -> nn.Sequential:
    layers = OrderedDict(depthwise=module.depthwise.to_conv())
    if module.activation is not None:
        layers["activation"] = ACTIVATIONS[module.activation].module()
    layers["pointwise"] = module.pointwise
    return nn.Sequential(layers).train(module.training)


_UNFUSE_LIMITS = ("the activation and pointwise conv it replaced stay nn.Identity where they "
                  "were, and BatchNorms folded into it stay folded")


def _stock(module: nn.Module, name: str, report: RevertReport) -> Optional[nn.Module]:
    """The stock module to put in place of ``module``, or None to keep it (and look inside)."""
    if not isinstance(module, (DepthwiseConv2d, DepthwiseSeparableConv2d)):
        return None
    reason = _keeps_forward(module)
    if reason is not None:
        report.skipped.append(Entry(name, type(module).__name__, reason))
        return None
    if isinstance(module, DepthwiseConv2d):
        report.reverted.append(Entry(name, "DepthwiseConv2d", "-> nn.Conv2d"))
        return module.to_conv()
    new = _unfuse(module)
    report.unfused.append(Entry(name, "DepthwiseSeparableConv2d",
                                f"-> Sequential({', '.join(new._modules)}); {_UNFUSE_LIMITS}"))
    return new


def _revert(module: nn.Module, name: str, report: RevertReport,
            memo: Dict[int, nn.Module]) -> nn.Module:
    # As convert's _replace_convs: an instance used in several places gets one replacement.
    if id(module) in memo:
        return memo[id(module)]
    memo[id(module)] = module
    new = _stock(module, name, report)
    if new is not None:
        memo[id(module)] = new
        return new
    for key, child in children(module):
        new_child = _revert(child, join(name, key), report, memo)
        if new_child is not child:
            setattr(module, key, new_child)
    return module


def revert(model: nn.Module, inplace: bool = False) -> Tuple[nn.Module, RevertReport]:
    """Replaces every ``fastdw.nn.DepthwiseConv2d`` by the ``nn.Conv2d(..., groups=C)`` it
    stands for and every ``DepthwiseSeparableConv2d`` by ``nn.Sequential(OrderedDict(
    depthwise=nn.Conv2d, [activation=nn.ReLU | nn.ReLU6 | nn.GELU], pointwise=nn.Conv2d))``.
    Returns ``(model, report)``.

    The stock modules *share* the fastdw modules' Parameter objects (weights, requires_grad,
    an optimizer holding them carry over) and keep train/eval mode; with ``inplace=False``
    (default) ``model`` is deep-copied first and left untouched. State-dict keys stay the same:
    a ``DepthwiseSeparableConv2d``'s are ``depthwise.*`` and ``pointwise.*`` and so are the
    Sequential's.

    What cannot be undone (the report says where): ``convert(fuse=True)`` put ``nn.Identity``
    where the activation, pointwise conv and BatchNorms of a fused chain were and folded the
    BatchNorms into the convs' weights; the reverted model computes the same function, but
    its structure and state_dict are those of the fused model. Exact subclasses only, and
    no modules with hooks or parametrizations: those are listed in ``report.skipped`` and
    left as they are.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fastdw: revert expects an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    report = RevertReport()
    return _revert(model, "", report, {}), report

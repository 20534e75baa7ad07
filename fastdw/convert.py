"""Model surgery: swap stock depthwise convs for fastdw's, and (for inference) fold BatchNorm
and fuse depthwise -> [BN] -> [activation] -> pointwise chains into one separable op.

    model, report = fastdw.convert(model)            # training or inference
    model, report = fastdw.convert(model.eval(), fuse=True)   # inference only
    print(report)
"""
from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ._surgery import Entry, Report, children, has_hooks, join, section
from .activations import module_activation
from .nn import (DepthwiseConv2d, DepthwiseSeparableConv2d, depthwise_mismatch,
                 separable_mismatch)

__all__ = ["convert", "ConversionReport", "Entry"]

_BATCHNORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)


@dataclasses.dataclass
class ConversionReport(Report):
    """What ``convert`` did. ``replaced``: depthwise convs now ``DepthwiseConv2d``;
    ``skipped``: convolutions (and, with ``fuse=True``, BatchNorms and depthwise convs left
    unfused) with the reason; ``folded``: BatchNorms folded into the conv before them;
    ``fused``: chains now one ``DepthwiseSeparableConv2d``."""
    replaced: List[Entry] = section()
    skipped: List[Entry] = section()
    folded: List[Entry] = section()
    fused: List[Entry] = section()

    SECTIONS = ("replaced", "folded", "fused", "skipped")
    SUMMARY = ("fastdw.convert: replaced {replaced}, skipped {skipped}, folded {folded} "
               "BatchNorm, fused {fused} separable chains")


def _replace_convs(module: nn.Module, name: str, report: ConversionReport,
                   memo: Dict[int, nn.Module]) -> nn.Module:
    """Returns the module to put in place of ``module`` (itself, or its replacement). A conv
    instance used in several places gets one replacement, used in all of them."""
    if id(module) in memo:
        return memo[id(module)]
    memo[id(module)] = module
    if isinstance(module, DepthwiseSeparableConv2d):
        report.skipped.append(Entry(name, type(module).__name__, "already a fastdw module"))
        return module
    if isinstance(module, nn.modules.conv._ConvNd):
        reason = depthwise_mismatch(module)
        if reason is None:
            report.replaced.append(Entry(name, type(module).__name__,
                                         f"-> DepthwiseConv2d ({_conv_desc(module)})"))
            memo[id(module)] = DepthwiseConv2d.from_conv(module)
        else:
            report.skipped.append(Entry(name, type(module).__name__, reason))
        return memo[id(module)]
    for child_name, child in children(module):
        new = _replace_convs(child, join(name, child_name), report, memo)
        if new is not child:
            setattr(module, child_name, new)
    return module


def _conv_desc(conv: nn.Conv2d) -> str:
    return (f"{conv.in_channels}->{conv.out_channels}, k={tuple(conv.kernel_size)}, "
            f"s={tuple(conv.stride)}")


# ---- fusion (inference) -------------------------------------------------------------------

def _is_plain_sequential(module: nn.Module) -> bool:
    # A Sequential subclass that keeps Sequential.forward (e.g. torchvision's
    # Conv2dNormActivation) still feeds each child's output to the next child only.
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _leaves(seq: nn.Sequential, prefix: str):
    """The data-flow order of a plain Sequential with nested plain Sequentials expanded:
    a list of (parent, key, qualified name, module)."""
    out = []
    for key, child in children(seq):
        name = join(prefix, key)
        if _is_plain_sequential(child) and not has_hooks(child):
            out += _leaves(child, name)
        else:
            out.append((seq, key, name, child))
    return out


def _chains(module: nn.Module, prefix: str = "", seen=None):
    """Yields the leaf lists of every outermost plain Sequential under ``module`` (each
    Sequential once, even where an instance is reused)."""
    seen = set() if seen is None else seen
    if id(module) in seen:
        return
    seen.add(id(module))
    if _is_plain_sequential(module):
        leaves = _leaves(module, prefix)
        yield leaves
        for _, _, name, leaf in leaves:  # look inside the leaves, e.g. residual blocks
            yield from _chains(leaf, name, seen)
    else:
        for key, child in children(module):
            yield from _chains(child, join(prefix, key), seen)


def _use_counts(model: nn.Module) -> Counter:
    """How many places (paths from the root) each module instance runs at. Fusion rewrites a
    module's weights or replaces it by key, so it only touches modules used exactly once."""
    counts: Counter = Counter()

    def walk(m):
        counts[id(m)] += 1
        for _, c in children(m):
            walk(c)
    walk(model)
    return counts


def _set(parent: nn.Module, key: str, new: nn.Module) -> None:
    setattr(parent, key, new)


def _fold_target(module: nn.Module) -> Optional[nn.Conv2d]:
    """The conv whose weights a following BatchNorm can be folded into."""
    if isinstance(module, DepthwiseSeparableConv2d):
        return module.pointwise
    if type(module) in (nn.Conv2d, DepthwiseConv2d) and isinstance(module.weight, nn.Parameter) \
            and not has_hooks(module):
        return module
    return None


def _fold_bn(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> None:
    weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean,
                                        bn.running_var, bn.eps, bn.weight, bn.bias)
    conv.weight, conv.bias = weight, bias


_SHARED = "used in more than one place in the model"


def _fold_pass(leaves, report: ConversionReport, uses: Counter) -> None:
    prev = None  # the last non-Identity leaf
    for i, (parent, key, name, module) in enumerate(leaves):
        if isinstance(module, nn.Identity):
            continue
        if type(module) in _BATCHNORMS:
            target = _fold_target(prev[3]) if prev is not None else None
            if target is None:
                reason = ("first module of its Sequential" if prev is None else
                          f"follows {type(prev[3]).__name__}, not a foldable conv")
            elif module.running_mean is None or module.running_var is None:
                reason = "no running statistics (track_running_stats=False)"
            elif uses[id(target)] > 1 or uses[id(module)] > 1:
                reason = f"it or its conv is {_SHARED}"
            elif target.out_channels != module.num_features:
                reason = "num_features differs from the conv's out_channels"
            elif has_hooks(module):
                reason = "has hooks"
            else:
                reason = None
            if reason is None:
                _fold_bn(target, module)
                _set(parent, key, nn.Identity())
                leaves[i] = (parent, key, name, parent._modules[key])
                report.folded.append(Entry(name, type(module).__name__, f"-> {prev[2]}"))
                continue  # prev stays the conv
            report.skipped.append(Entry(name, type(module).__name__, f"not folded: {reason}"))
        prev = (parent, key, name, module)


def _activation_of(module: nn.Module) -> Tuple[bool, Optional[str]]:
    """(is a fusable activation, its name for the fused op)."""
    name = module_activation(module)
    if name is None or has_hooks(module):
        return False, None
    return True, name


def _fuse_pass(leaves, report: ConversionReport, uses: Counter) -> None:
    i = 0
    while i < len(leaves):
        parent, key, name, module = leaves[i]
        if type(module) is not DepthwiseConv2d:
            i += 1
            continue
        # walk over Identities to an optional activation, then to the pointwise conv
        j, activation, act_index, reason = i + 1, None, None, None
        while j < len(leaves) and isinstance(leaves[j][3], nn.Identity):
            j += 1
        if j < len(leaves):
            is_act, act_name = _activation_of(leaves[j][3])
            if is_act:
                activation, act_index = act_name, j
                j += 1
                while j < len(leaves) and isinstance(leaves[j][3], nn.Identity):
                    j += 1
        if j >= len(leaves):
            reason = "no pointwise conv follows in its Sequential"
        else:
            reason = separable_mismatch(module, leaves[j][3])
            if reason is None and (uses[id(module)] > 1 or uses[id(leaves[j][3])] > 1):
                reason = f"the depthwise or pointwise conv is {_SHARED}"
        if reason is not None:
            report.skipped.append(Entry(name, type(module).__name__, f"not fused: {reason}"))
            i += 1
            continue
        pw_name = leaves[j][2]
        fused = DepthwiseSeparableConv2d.from_modules(module, leaves[j][3], activation)
        _set(parent, key, fused)
        for k in (act_index, j):
            if k is not None:
                _set(leaves[k][0], leaves[k][1], nn.Identity())
        chain = [name] + ([leaves[act_index][2]] if act_index is not None else []) + [pw_name]
        report.fused.append(Entry(name, "DepthwiseSeparableConv2d",
                                  f"{' + '.join(chain)} (activation={activation!r})"))
        i = j + 1


def _fuse(model: nn.Module, report: ConversionReport) -> nn.Module:
    uses = _use_counts(model)
    for leaves in list(_chains(model)):
        _fold_pass(leaves, report, uses)
    uses = _use_counts(model)
    for leaves in list(_chains(model)):
        _fuse_pass(leaves, report, uses)
    # BatchNorms outside any Sequential chain are left as they are; say so.
    folded = {e.name for e in report.folded}
    listed = {e.name for e in report.skipped}
    for name, module in model.named_modules():
        if type(module) in _BATCHNORMS and name not in folded and name not in listed:
            report.skipped.append(Entry(name, type(module).__name__,
                                        "not folded: not after a conv inside an nn.Sequential"))
    return model


def convert(model: nn.Module, inplace: bool = False,
            fuse: bool = False) -> Tuple[nn.Module, ConversionReport]:
    """Replaces every ``nn.Conv2d`` with groups == in_channels (out_channels a multiple of it)
    by ``fastdw.nn.DepthwiseConv2d``. Returns ``(model, report)``.

    The new modules share the old modules' Parameter objects, so weights, device, dtype,
    requires_grad -- and, with ``inplace=True``, an optimizer built before conversion -- carry
    over; train/eval mode is kept. With ``inplace=False`` (default) ``model`` is deep-copied
    first and left untouched. Only exact ``nn.Conv2d`` instances are replaced; the report says
    why each other convolution was skipped.

    ``fuse=True`` (inference only; every module must be in eval mode, else ValueError) also
    folds each BatchNorm2d into the conv right before it, and replaces depthwise -> [BN] ->
    [ReLU | ReLU6 | GELU] -> pointwise (1x1, groups=1, stride 1) chains by
    ``DepthwiseSeparableConv2d``. Chains are found in ``nn.Sequential`` containers (nested plain
    Sequentials are followed, since data flows child to child there); a module's custom
    ``forward`` is never analysed. Removed modules become ``nn.Identity`` so that indices and
    the names of untouched modules stay the same.

    The converted model computes what the original computes, up to floating-point rounding
    (outputs, gradients, layouts and errors; BatchNorm folding with ``fuse=True`` changes
    rounding only); a convolution fastdw cannot compute the same way is skipped and reported.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: ``fuse=True`` with a module in training mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fastdw: convert expects an nn.Module, got {type(model).__name__}")
    if fuse:
        training = [name or "<root>" for name, m in model.named_modules() if m.training]
        if training:
            raise ValueError("fastdw: convert(fuse=True) is for inference and needs the model in "
                             f"eval mode (call model.eval()); in training mode: "
                             f"{', '.join(training[:5])}{' ...' if len(training) > 5 else ''}")
    if not inplace:
        model = copy.deepcopy(model)
    report = ConversionReport()
    with torch.no_grad():
        model = _replace_convs(model, "", report, {})
        if fuse:
            model = _fuse(model, report)
    return model, report

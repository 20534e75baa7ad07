"""End-to-end benchmark: a model's inference and training step, stock PyTorch against the same
model converted by ``fastdw.convert`` (and, for inference, converted with ``fuse=True``).

Models: ``mobilenet_v2`` (fastdw's own MobileNetV2, ``width_mult``), or ``timm:<name>`` (a timm
model built with random weights, e.g. ``timm:mobilenetv2_100``, ``timm:efficientnet_b0``,
``timm:convnext_tiny``; timm must be installed).

Providers: ``torch`` (stock model: PyTorch picks its own depthwise kernel), ``fastdw``
(``convert(model)``: fastdw's CPU op as planned, which may pick PyTorch's own convolution for a
pass), ``fastdw-kernels`` (the same converted model with fastdw's own kernels only),
``fastdw-fused`` (``convert(model.eval(), fuse=True)``, inference only).

Timed by the benchmark engine's timer (``fastdw.benchmark.timing.time_group``). On CPU the
providers are interleaved: ``rounds`` rounds, each giving every provider a
``torch.utils.benchmark`` blocked_autorange in rotating order, so load from other processes
falls on all of them alike; a row's time is the median over its blocks, its speedup the median
over rounds of the per-round ratio to ``torch``. On GPU, ``triton.testing.do_bench`` (median,
with 20th/80th percentiles), which synchronises.
"""
from __future__ import annotations

import copy
import platform
import statistics
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..benchmark.timing import TimerConfig, time_group
from ..convert import convert
from .mobilenetv2 import mobilenet_v2

__all__ = ["run_e2e", "format_rows", "build_model", "PROVIDERS", "MODES"]

PROVIDERS = ("torch", "fastdw", "fastdw-fused")
ALL_PROVIDERS = ("torch", "fastdw", "fastdw-kernels", "fastdw-fused")
MODES = ("inference", "train")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def build_model(model: str, width_mult: float = 1.0) -> nn.Module:
    """The stock model: ``mobilenet_v2`` (fastdw's, ``width_mult``) or ``timm:<name>`` (random
    weights, 1000 classes)."""
    if model == "mobilenet_v2":
        return mobilenet_v2(width_mult=width_mult, use_fastdw=False)
    if model.startswith("timm:"):
        import timm
        return timm.create_model(model[len("timm:"):], pretrained=False)
    raise ValueError(f"unknown model {model!r}; expected mobilenet_v2 or timm:<name>")


def _build(provider: str, stock: nn.Module, mode: str) -> Optional[nn.Module]:
    model = copy.deepcopy(stock).train(mode == "train")
    if provider == "torch":
        return model
    if provider in ("fastdw", "fastdw-kernels"):
        return convert(model, inplace=True)[0]
    if provider == "fastdw-fused":
        return convert(model, inplace=True, fuse=True)[0] if mode == "inference" else None
    raise ValueError(f"unknown provider {provider!r}; expected one of {ALL_PROVIDERS}")


def run_e2e(device="cpu", batch: Optional[int] = None, resolution: int = 224,
            modes: Sequence[str] = MODES, providers: Sequence[str] = PROVIDERS,
            dtype: torch.dtype = torch.float32, channels_last: bool = False,
            width_mult: float = 1.0, min_run_time: float = 1.0,
            seed: int = 0, model: str = "mobilenet_v2",
            rounds: int = 3) -> List[Dict[str, object]]:
    """Times ``model`` per mode and provider; returns one row (a dict) per measurement.
    ``batch`` defaults to 8 on CPU and 64 on GPU. Each row holds the median time in ms, the
    speedup over ``torch`` in the same mode, and for inference the largest difference of the
    logits from the stock model's (same weights), relative to the largest stock logit."""
    from .. import planner

    device = torch.device(device)
    if batch is None:
        batch = 64 if device.type == "cuda" else 8
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    torch.manual_seed(seed)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    stock = build_model(model, width_mult).to(device=device, dtype=dtype,
                                             memory_format=memory_format)
    x = torch.randn(batch, 3, resolution, resolution, device=device, dtype=dtype).contiguous(
        memory_format=memory_format)
    target = torch.randint(0, 1000, (batch,), device=device)
    name = f"mobilenet_v2_{width_mult:g}" if model == "mobilenet_v2" else model
    rows = []
    for mode in modes:
        fns, errs = {}, {}
        reference_out = None
        for provider in providers:
            net = _build(provider, stock, mode)
            if net is None:
                continue
            if mode == "inference":
                def fn(net=net):
                    with torch.inference_mode():
                        return net(x)
            else:
                opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)

                def fn(net=net, opt=opt):
                    opt.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(net(x), target)
                    loss.backward()
                    opt.step()
            if provider == "fastdw-kernels":
                fn = planner.with_own_kernels(fn)
            if mode == "inference":
                out = fn().double()
                if reference_out is None:
                    reference_out = out
                errs[provider] = ((out - reference_out).abs().max() /
                                  reference_out.abs().max().clamp_min(1e-30)).item()
            fns[provider] = fn
        # Warm-up of a few calls (first-call allocations, oneDNN primitive creation); the
        # GPU's do_bench runs for rep_ms = min_run_time.
        timer = TimerConfig(min_time=min_run_time * len(fns), rounds=rounds, warmup=0.5,
                            rep_ms=min_run_time * 1e3, warmup_ms=100.0)
        timed = time_group(fns, device, timer)
        base = timed[next(iter(timed))]
        for provider, t in timed.items():
            med = t.median_ms
            if device.type == "cuda":
                p20, p80 = t.lo_ms, t.hi_ms
                speedup = base.median_ms / med
            else:
                p20 = p80 = None
                speedup = statistics.median(
                    b / m for b, m in zip(base.round_medians_ms, t.round_medians_ms))
            rows.append(dict(
                model=name, mode=mode, provider=provider,
                device=_device_name(device), batch=batch, resolution=resolution,
                dtype=str(dtype).replace("torch.", ""),
                memory_format="channels_last" if channels_last else "nchw",
                median_ms=med, p20_ms=p20, p80_ms=p80, speedup=speedup,
                max_rel_diff=errs.get(provider), torch=torch.__version__))
    return rows


def format_rows(rows: Sequence[Dict[str, object]]) -> str:
    """A plain-text table of ``run_e2e`` rows."""
    if not rows:
        return "(no rows)"
    head = rows[0]
    lines = [f"{head['model']} end to end on {head['device']}, batch {head['batch']}, "
             f"{head['resolution']}x{head['resolution']}, {head['dtype']}, "
             f"{head['memory_format']}, torch {head['torch']}",
             f"{'mode':<10} {'provider':<15} {'median ms':>10} {'p20-p80 ms':>16} "
             f"{'speedup':>8} {'rel. diff':>10}"]
    for r in rows:
        spread = (f"{r['p20_ms']:.3f}-{r['p80_ms']:.3f}" if r["p20_ms"] is not None else "")
        diff = f"{r['max_rel_diff']:.1e}" if r["max_rel_diff"] is not None else ""
        lines.append(f"{r['mode']:<10} {r['provider']:<15} {r['median_ms']:>10.3f} "
                     f"{spread:>16} {r['speedup']:>7.2f}x {diff:>10}")
    return "\n".join(lines)

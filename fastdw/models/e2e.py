"""End-to-end benchmark: MobileNetV2 inference and a training step, stock PyTorch against the
same model converted by ``fastdw.convert`` (and, for inference, converted with ``fuse=True``).

Providers: ``torch`` (stock model: PyTorch picks its own depthwise kernel), ``fastdw``
(``convert(model)``), ``fastdw-fused`` (``convert(model.eval(), fuse=True)``, inference only).
CPU timings use ``torch.utils.benchmark`` (blocked_autorange median); GPU timings use
``triton.testing.do_bench`` (median, with 20th/80th percentiles), which synchronises.
"""
from __future__ import annotations

import copy
import platform
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..convert import convert
from .mobilenetv2 import mobilenet_v2

__all__ = ["run_e2e", "format_rows", "PROVIDERS", "MODES"]

PROVIDERS = ("torch", "fastdw", "fastdw-fused")
MODES = ("inference", "train")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def _timer(fn: Callable[[], object], device: torch.device, min_run_time: float):
    """(median, p20, p80) in milliseconds; p20/p80 are None on CPU."""
    if device.type == "cuda":
        import triton.testing
        med, p20, p80 = triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8])
        return med, p20, p80
    from torch.utils import benchmark
    for _ in range(2):  # warm-up outside the measurement (first-call allocations, oneDNN init)
        fn()
    m = benchmark.Timer(stmt="fn()", globals={"fn": fn},
                        num_threads=torch.get_num_threads()).blocked_autorange(
                            min_run_time=min_run_time)
    return m.median * 1e3, None, None


def _build(provider: str, stock: nn.Module, mode: str) -> Optional[nn.Module]:
    model = copy.deepcopy(stock).train(mode == "train")
    if provider == "torch":
        return model
    if provider == "fastdw":
        return convert(model, inplace=True)[0]
    if provider == "fastdw-fused":
        return convert(model, inplace=True, fuse=True)[0] if mode == "inference" else None
    raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")


def run_e2e(device="cpu", batch: Optional[int] = None, resolution: int = 224,
            modes: Sequence[str] = MODES, providers: Sequence[str] = PROVIDERS,
            dtype: torch.dtype = torch.float32, channels_last: bool = False,
            width_mult: float = 1.0, min_run_time: float = 1.0,
            seed: int = 0) -> List[Dict[str, object]]:
    """Times MobileNetV2 (``width_mult``, 1000 classes) per mode and provider; returns one row
    (a dict) per measurement. ``batch`` defaults to 8 on CPU and 64 on GPU. Each row holds the
    median time in ms, the speedup over ``torch`` in the same mode, and for inference the
    largest difference of the logits from the stock model's (same weights), relative to the
    largest stock logit."""
    device = torch.device(device)
    if batch is None:
        batch = 64 if device.type == "cuda" else 8
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    torch.manual_seed(seed)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    stock = mobilenet_v2(width_mult=width_mult, use_fastdw=False).to(
        device=device, dtype=dtype, memory_format=memory_format)
    x = torch.randn(batch, 3, resolution, resolution, device=device, dtype=dtype).contiguous(
        memory_format=memory_format)
    target = torch.randint(0, 1000, (batch,), device=device)
    rows = []
    for mode in modes:
        reference_out = None
        base_ms = None
        for provider in providers:
            model = _build(provider, stock, mode)
            if model is None:
                continue
            if mode == "inference":
                def fn(model=model):
                    with torch.inference_mode():
                        return model(x)
                out = fn().double()
                if reference_out is None:
                    reference_out = out
                err = ((out - reference_out).abs().max() /
                       reference_out.abs().max().clamp_min(1e-30)).item()
            else:
                opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

                def fn(model=model, opt=opt):
                    opt.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(model(x), target)
                    loss.backward()
                    opt.step()
                err = None
            med, p20, p80 = _timer(fn, device, min_run_time)
            if base_ms is None:
                base_ms = med
            rows.append(dict(
                model=f"mobilenet_v2_{width_mult:g}", mode=mode, provider=provider,
                device=_device_name(device), batch=batch, resolution=resolution,
                dtype=str(dtype).replace("torch.", ""),
                memory_format="channels_last" if channels_last else "nchw",
                median_ms=med, p20_ms=p20, p80_ms=p80, speedup=base_ms / med,
                max_rel_diff=err, torch=torch.__version__))
            del model
    return rows


def format_rows(rows: Sequence[Dict[str, object]]) -> str:
    """A plain-text table of ``run_e2e`` rows."""
    if not rows:
        return "(no rows)"
    head = rows[0]
    lines = [f"MobileNetV2 end to end on {head['device']}, batch {head['batch']}, "
             f"{head['resolution']}x{head['resolution']}, {head['dtype']}, "
             f"{head['memory_format']}, torch {head['torch']}",
             f"{'mode':<10} {'provider':<13} {'median ms':>10} {'p20-p80 ms':>16} "
             f"{'speedup':>8} {'rel. diff':>10}"]
    for r in rows:
        spread = (f"{r['p20_ms']:.3f}-{r['p80_ms']:.3f}" if r["p20_ms"] is not None else "")
        diff = f"{r['max_rel_diff']:.1e}" if r["max_rel_diff"] is not None else ""
        lines.append(f"{r['mode']:<10} {r['provider']:<13} {r['median_ms']:>10.3f} "
                     f"{spread:>16} {r['speedup']:>7.2f}x {diff:>10}")
    return "\n".join(lines)

"""Converted models in the rest of PyTorch: training, autocast, channels_last, torch.compile,
DistributedDataParallel (2 CPU processes), deepcopy/pickle, torch.export."""
from __future__ import annotations

import copy
import io
import os
import pickle
import socket
import tempfile

import pytest
import torch
import torch.nn.functional as F

from fastdw.convert import convert
from fastdw.models import mobilenet_v2
from fastdw.nn import DepthwiseConv2d, DepthwiseSeparableConv2d


def _pair(width=0.25, classes=10, dtype=torch.float32, dropout=0.0):
    """(stock, converted) small MobileNetV2s with the same weights, in train mode."""
    torch.manual_seed(0)
    stock = mobilenet_v2(num_classes=classes, width_mult=width, dropout=dropout,
                         use_fastdw=False).to(dtype)
    converted, _ = convert(stock)
    return stock, converted


def _train(model, x, target, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), target).backward()
        opt.step()
    return model


@pytest.mark.slow
def test_training_steps_match_stock():
    # 64x64, not 32x32: with a 1x1 final feature map and batch 4, train-mode BatchNorm of
    # near-constant channels amplifies rounding differences (of any two conv kernels) to 1e-8.
    stock, converted = _pair(dtype=torch.float64)
    torch.manual_seed(0)
    x = torch.randn(4, 3, 64, 64, dtype=torch.float64)
    target = torch.randint(0, 10, (4,))
    before = converted.features[2].conv[1][0].weight.detach().clone()
    _train(stock, x, target)
    _train(converted, x, target)
    for (name, a), b in zip(stock.state_dict().items(), converted.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10,
                                   msg=lambda m, name=name: f"{name}: {m}")
    dw = converted.features[2].conv[1][0]
    assert type(dw) is DepthwiseConv2d  # the weights that moved were fastdw's
    assert (dw.weight - before).abs().max() > 1e-4


def test_cpu_autocast_bf16_model():
    stock, converted = _pair()
    stock.eval(), converted.eval()
    x = torch.randn(2, 3, 32, 32)
    seen = []
    hook = converted.features[2].conv[1][0].register_forward_hook(
        lambda m, i, o: seen.append(o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, y_ref = converted(x), stock(x)
    hook.remove()
    assert seen == [torch.bfloat16] and y.dtype == y_ref.dtype
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=0.1, atol=0.05)


@pytest.mark.parametrize("fuse", [False, True])
def test_channels_last_model(fuse):
    stock, converted = _pair()
    stock.eval()
    converted, _ = convert(stock, fuse=fuse)
    stock = stock.to(memory_format=torch.channels_last)
    converted = converted.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    formats = []
    kind = DepthwiseSeparableConv2d if fuse else DepthwiseConv2d
    for m in converted.modules():
        if isinstance(m, kind):
            m.register_forward_hook(lambda m, i, o: formats.append(
                o.is_contiguous(memory_format=torch.channels_last)))
    torch.testing.assert_close(converted(x), stock(x), rtol=1e-4, atol=1e-4)
    assert len(formats) == 17 and all(formats)


def test_deepcopy_pickle_and_save():
    stock, converted = _pair()
    converted.eval()
    fused, _ = convert(stock.eval(), fuse=True)
    x = torch.randn(1, 3, 32, 32)
    for model in (converted, fused):
        expected = model(x)
        buf = io.BytesIO()
        torch.save(model, buf)
        buf.seek(0)
        for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model)),
                      torch.load(buf, weights_only=False)):
            torch.testing.assert_close(clone(x), expected)


def test_torch_export():
    stock, converted = _pair()
    fused, _ = convert(stock.eval(), fuse=True)
    x = torch.randn(2, 3, 32, 32)
    for model in (converted.eval(), fused):
        exported = torch.export.export(model, (x,))
        targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
        assert any("fastdw" in t for t in targets), targets
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_fullgraph():
    # One inductor compile (slowest test here): inference of a converted MobileNetV2 must be
    # one graph (fullgraph=True raises on a break); a training step and a fused model with the
    # cheaper aot_eager backend check the backward and the separable op under compile too.
    torch._dynamo.reset()
    stock, converted = _pair()
    x = torch.randn(2, 3, 32, 32)
    converted.eval()
    compiled = torch.compile(converted, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), converted(x), rtol=1e-4, atol=1e-4)
    converted.train()
    train_compiled = torch.compile(converted, fullgraph=True, backend="aot_eager")
    loss = train_compiled(x).square().mean()
    loss.backward()
    grad = converted.features[2].conv[1][0].weight.grad
    converted.zero_grad()
    converted(x).square().mean().backward()
    torch.testing.assert_close(grad, converted.features[2].conv[1][0].weight.grad,
                               rtol=1e-4, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert train_compiled(x).dtype == torch.bfloat16
    fused, report = convert(stock.eval(), fuse=True)  # the separable op compiles too
    assert len(report.fused) == 17
    fused_compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(fused_compiled(x), fused(x), rtol=1e-5, atol=1e-5)


# ---- DistributedDataParallel, 2 CPU processes over gloo ---------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, x, target, out_dir):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        _, converted = _pair()
        model = DDP(converted.eval())  # eval: BatchNorm uses running stats, as in one process
        shard = x.shape[0] // world
        _train(model, x[rank * shard:(rank + 1) * shard], target[rank * shard:(rank + 1) * shard])
        torch.save(model.module.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_match_single_process():
    torch.manual_seed(1)
    x = torch.randn(4, 3, 32, 32)
    target = torch.randint(0, 10, (4,))
    with tempfile.TemporaryDirectory() as out_dir:
        torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), x, target, out_dir),
                                    nprocs=2, join=True)
        states = [torch.load(os.path.join(out_dir, f"rank{r}.pt")) for r in range(2)]
    _, single = _pair()
    _train(single.eval(), x, target)
    for name, expected in single.state_dict().items():
        for state in states:
            torch.testing.assert_close(state[name], expected, rtol=1e-4, atol=1e-5,
                                       msg=lambda m, name=name: f"{name}: {m}")

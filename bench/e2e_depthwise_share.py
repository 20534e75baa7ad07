"""How much of a MobileNetV2 training step the depthwise layers are: the ceiling on any
end-to-end speedup from replacing them (Amdahl's law).

    python bench/e2e_depthwise_share.py                  # CPU, batch 8, NCHW
    python bench/e2e_depthwise_share.py --channels-last

Profiles one stock training step and one converted step (after warm-up) with torch.profiler
and reports the self CPU time of the depthwise convolutions (forward and backward) against the
whole step. Stock depthwise ops are recognised by their input/weight shapes: weight (C, 1, k, k)
with C input channels."""
import argparse
import copy

import torch
import torch.nn.functional as F
from torch.profiler import profile

import fastdw
from fastdw.models import mobilenet_v2


def step_profile(model, x, target, opt):
    for _ in range(3):  # warm-up: allocator, oneDNN primitive caches
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), target).backward()
        opt.step()
    with profile(record_shapes=True) as prof:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), target).backward()
        opt.step()
    return prof.key_averages(group_by_input_shape=True)


# PyTorch's convolution ops and the position of the weight among their recorded input shapes.
_WEIGHT_ARG = {"aten::mkldnn_convolution": 1, "aten::_conv_depthwise2d": 1,
               "aten::thnn_conv2d": 1, "aten::convolution_backward": 2}


def depthwise_ms(events):
    total = sum(e.self_cpu_time_total for e in events) / 1e3
    dw = 0.0
    for e in events:
        if "fastdw" in e.key:  # the ops and their autograd nodes
            dw += e.self_cpu_time_total / 1e3
        elif e.key in _WEIGHT_ARG:
            shapes, i = e.input_shapes, _WEIGHT_ARG[e.key]
            weight = shapes[i] if len(shapes) > i else []
            if len(weight) == 4 and weight[1] == 1 and weight[0] > 1:  # (C*m, 1, kh, kw)
                dw += e.self_cpu_time_total / 1e3
    return dw, total


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args()
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    stock = mobilenet_v2(use_fastdw=False).to(memory_format=fmt)
    converted = fastdw.convert(copy.deepcopy(stock))[0]
    x = torch.randn(args.batch, 3, 224, 224).contiguous(memory_format=fmt)
    target = torch.randint(0, 1000, (args.batch,))
    print(f"MobileNetV2 training step, batch {args.batch}, "
          f"{'channels_last' if args.channels_last else 'NCHW'}, {torch.get_num_threads()} threads,"
          f" torch {torch.__version__} (profiler self CPU time, all threads)")
    results = {}
    for name, model in (("stock", stock), ("fastdw", converted)):
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        results[name] = depthwise_ms(step_profile(model, x, target, opt))
        dw, total = results[name]
        print(f"  {name:7s} step {total:8.1f} ms   depthwise {dw:7.1f} ms ({100 * dw / total:4.1f}%)")
    dw, total = results["stock"]
    print(f"  ceiling on the step speedup from the depthwise layers alone (Amdahl): "
          f"{total / (total - dw):.2f}x; with fastdw's depthwise time: "
          f"{total / (total - dw + results['fastdw'][0]):.2f}x")


if __name__ == "__main__":
    main()

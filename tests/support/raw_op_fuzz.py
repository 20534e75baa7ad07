"""Child process of tests/test_fuzz.py::test_fuzz_raw_ops_in_subprocess (not a test module).

Makes ``--count`` random, mostly inconsistent calls to the raw ops torch.ops.fastdw.* (sizes
off by one, negative or zero sizes, wrong lengths, mismatched grad_output / input_size /
weight_size, wrong dtypes, meta/cpu mixes, every layout). Each case is appended to ``--log`` as
one JSON line *before* it runs, so if this process dies by a signal the last line is the repro:

    python tests/support/raw_op_fuzz.py --replay '<json line>'

A call must either raise ValueError/TypeError/RuntimeError, or succeed and agree with ATen's
own convolution (forward or convolution_backward, in float64). Prints a JSON summary as the last
stdout line; exits 1 on any failure.
"""
from __future__ import annotations

import argparse
import json
import random
import sys

import torch
import torch.nn.functional as F

import fastdw  # noqa: F401  (registers torch.ops.fastdw)
from fastdw import accuracy

ops = torch.ops.fastdw
FLOAT = ["float64", "float32", "bfloat16", "float16"]
OTHER = ["int32", "bool", "complex64"]
ALLOWED = (ValueError, TypeError, RuntimeError)


def _out(i, k, s, p, d):
    return (i + 2 * p - d * (k - 1) - 1) // s + 1 if s > 0 else 1


def _pair(rng, lo, hi, valid_lo):
    r = rng.random()
    if r < 0.03:
        return [rng.randint(lo, hi)]                  # wrong length
    if r < 0.05:
        return [rng.randint(lo, hi) for _ in range(3)]
    if r < 0.15:
        return [rng.randint(lo, hi), rng.randint(lo, hi)]  # maybe invalid
    return [rng.randint(valid_lo, hi), rng.randint(valid_lo, hi)]


def _perturb(rng, size, limit=20):
    size = list(size)
    r = rng.random()
    if r < 0.55:
        return size
    if r < 0.9:
        i = rng.randrange(len(size))
        size[i] = rng.choice([size[i] + 1, size[i] - 1, 0, -1, -size[i], rng.randint(0, limit)])
        return size
    if r < 0.95:
        return size[:-1]
    return size + [1]


def gen_case(rng):
    n, c, m = rng.choice([0, 1, 1, 2, 3]), rng.choice([0, 1, 2, 3, 4, 4]), rng.randint(1, 3)
    kh, kw = rng.choice([0, 1, 2, 3, 3, 5]), rng.choice([0, 1, 2, 3, 3, 4])
    stride = _pair(rng, -1, 4, 1)
    padding = _pair(rng, -1, 6, 0)
    dilation = _pair(rng, -1, 3, 1)
    h, w = rng.randint(0, 11), rng.randint(0, 11)
    dtype = rng.choice(FLOAT * 8 + OTHER)
    case = dict(op=rng.choice(["fwd", "bwi", "bww"]), seed=rng.randrange(2**31),
                x=[n, c, h, w], w=[c * m, rng.choice([1] * 9 + [2]), kh, kw],
                stride=stride, padding=padding, dilation=dilation, dtype=dtype,
                dtype2=dtype if rng.random() < 0.9 else rng.choice(FLOAT + OTHER),
                layout=rng.choice(["nchw", "nchw", "cl", "noncontig", "expanded"]),
                glayout=rng.choice(["nchw", "cl", "noncontig", "expanded"]),
                meta=rng.choice([None] * 24 + ["first", "second", "bias", "all"]),
                bias=None)
    if case["op"] == "fwd":
        case["x"] = _perturb(rng, case["x"], 12) if rng.random() < 0.3 else case["x"]
        case["w"] = _perturb(rng, case["w"], 6) if rng.random() < 0.3 else case["w"]
        if rng.random() < 0.5:
            case["bias"] = _perturb(rng, [case["w"][0]], 6) if rng.random() < 0.3 else [case["w"][0]]
    else:
        # grad_output's shape from the (valid-looking) geometry, then the size argument and
        # grad_output perturbed independently.
        s0, s1 = (stride + [1, 1])[:2]
        p0, p1 = (padding + [0, 0])[:2]
        d0, d1 = (dilation + [1, 1])[:2]
        gshape = [n, c * m, _out(h, kh, s0, p0, d0), _out(w, kw, s1, p1, d1)]
        case["g"] = _perturb(rng, gshape, 12) if rng.random() < 0.3 else gshape
        case["size"] = _perturb(rng, case["x"] if case["op"] == "bwi" else case["w"], 20)
    return case


def _dt(name):
    return getattr(torch, name)


def _tensor(shape, dtype, gen, layout):
    shape = [max(s, 0) for s in shape]  # a negative size is tested through the int lists only
    t = torch.randn(shape, generator=gen, dtype=torch.float64)
    t = t.to(_dt(dtype)) if dtype != "bool" else t > 0
    if t.dim() == 4 and layout == "cl":
        t = t.contiguous(memory_format=torch.channels_last)
    elif t.dim() >= 1 and layout == "noncontig":
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        t = wide[..., ::2]
    elif t.dim() >= 1 and layout == "expanded" and t.shape[0] > 0:
        t = t[:1].expand(t.shape)
    return t


def build(case):
    gen = torch.Generator().manual_seed(case["seed"])
    x = _tensor(case["x"], case["dtype"], gen, case["layout"])
    w = _tensor(case["w"], case["dtype2"], gen, "nchw")
    b = None if case["bias"] is None else _tensor(case["bias"], case["dtype"], gen, "nchw")
    g = None
    if case["op"] != "fwd":
        g = _tensor(case["g"], case["dtype"], gen, case["glayout"])
    meta = case["meta"]
    if case["op"] == "fwd":
        first, second = x, w
    elif case["op"] == "bwi":
        first, second = g, w
    else:
        first, second = g, x
    if meta == "first":
        first = first.to("meta")
    elif meta == "second":
        second = second.to("meta")
    elif meta == "bias" and b is not None:
        b = b.to("meta")
    elif meta == "all":
        first, second = first.to("meta"), second.to("meta")
        b = None if b is None else b.to("meta")
    if case["op"] == "fwd":
        return first, second, b
    return first, second


def call(case, tensors):
    args = (case["stride"], case["padding"], case["dilation"])
    if case["op"] == "fwd":
        return ops.depthwise_conv2d(*tensors, *args)
    if case["op"] == "bwi":
        return ops.depthwise_conv2d_backward_input(*tensors, case["size"], *args)
    return ops.depthwise_conv2d_backward_weight(*tensors, case["size"], *args)


def reference(case, tensors):
    """ATen's answer in float64, or raises if ATen refuses the arguments."""
    s, p, d = case["stride"], case["padding"], case["dilation"]
    t64 = [None if t is None else t.double() for t in tensors]
    if case["op"] == "fwd":
        x, w, b = t64
        return F.conv2d(x, w, b, s, p, d, x.shape[1])
    if case["op"] == "bwi":
        g, w = t64
        size = case["size"]
        gi, _, _ = torch.ops.aten.convolution_backward(
            g, torch.zeros(size, dtype=torch.float64), w, None, s, p, d, False, [0, 0],
            size[1], [True, False, False])
        return gi
    g, x = t64
    _, gw, gb = torch.ops.aten.convolution_backward(
        g, x, torch.zeros(case["size"], dtype=torch.float64), [case["size"][0]], s, p, d,
        False, [0, 0], x.shape[1], [False, True, True])
    return gw, gb


def _zero_spatial(case):
    # _tensor clamps negative sizes to 0.
    return any(v <= 0 for v in case["x"][2:4]) or (case["op"] == "bwi" and
                                                   any(v <= 0 for v in case["size"][2:4]))


def run_case(case, stats):
    tensors = build(case)
    try:
        result = call(case, tensors)
    except ALLOWED as e:
        stats["raised"] += 1
        key = type(e).__name__
        stats["by_type"][key] = stats["by_type"].get(key, 0) + 1
        if not str(e).strip():
            return f"empty {key} message"
        return None
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__} (not ValueError/TypeError/RuntimeError): {e}"
    stats["ran"] += 1
    if any(t is not None and t.device.type == "meta" for t in tensors):
        if any(t is not None and t.device.type != "meta" for t in tensors):
            stats["meta_mix_accepted"] += 1  # pinned by test_hardening (raw op, meta vs cpu)
        return None
    try:
        ref = reference(case, tensors)
    except RuntimeError as e:
        if _zero_spatial(case):
            stats["zero_spatial_accepted"] += 1  # pinned by test_hardening
            return None
        return f"fastdw accepted what ATen refuses ({str(e).splitlines()[0][:200]})"
    results = result if isinstance(result, tuple) else (result,)
    refs = ref if isinstance(ref, tuple) else (ref,)
    for got, exp in zip(results, refs):
        if tuple(got.shape) != tuple(exp.shape):
            return f"shape {tuple(got.shape)} != ATen's {tuple(exp.shape)}"
        if got.dtype != tensors[0].dtype:
            return f"dtype {got.dtype} != {tensors[0].dtype}"
        verdict = accuracy.compare(got, accuracy.Expected.of_size(exp.double()))
        if not verdict.ok:
            return verdict.message("values")
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log", default=None)
    ap.add_argument("--replay", default=None, help="one JSON case line from the log")
    a = ap.parse_args()
    stats = dict(cases=0, ran=0, raised=0, by_type={}, meta_mix_accepted=0,
                 zero_spatial_accepted=0, failed=0, failures=[])
    if a.replay:
        case = json.loads(a.replay)
        print(run_case(case, stats) or "ok", stats)
        return 0
    rng = random.Random(a.seed)
    log = open(a.log, "w") if a.log else None
    for _ in range(a.count):
        case = gen_case(rng)
        if log:
            log.write(json.dumps(case) + "\n")
            log.flush()
        stats["cases"] += 1
        failure = run_case(case, stats)
        if failure:
            stats["failed"] += 1
            meta = case["meta"] is not None
            if sum(f["meta"] == meta for f in stats["failures"]) < 20:  # 20 of each kind
                stats["failures"].append(dict(case=case, failure=failure, meta=meta))
    stats["seed"] = a.seed
    print(json.dumps(stats))
    return 1 if stats["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m fastdw params C_in C_out k``: the tutorial's parameter table.

Standard k x k conv, depthwise k x k, pointwise 1x1 and depthwise-separable (depthwise then
pointwise): formula, weights only, with biases, and the reduction against the standard conv.
Every count is cross-checked against the parameters of the actual ``torch.nn.Conv2d`` modules
(built on the meta device, so nothing is allocated).
"""
from __future__ import annotations

import json

from . import command_parser, positive_int


def add_parser(sub) -> None:
    p = command_parser(sub, "params", "parameter counts: standard vs depthwise-separable conv",
                       __doc__, run)
    p.add_argument("c_in", type=positive_int, metavar="C_in", help="input channels")
    p.add_argument("c_out", type=positive_int, metavar="C_out", help="output channels")
    p.add_argument("k", type=positive_int, help="kernel size (k x k)")
    p.add_argument("--json", action="store_true", help="print the table as JSON instead")


def counts(c_in: int, c_out: int, k: int):
    """Rows of the table: (name, input, output, formula, weights, biases)."""
    dw_w, dw_b = c_in * k * k, c_in
    pw_w, pw_b = c_in * c_out, c_out
    return [
        ("standard", f"[H,W,{c_in}]", f"[H,W,{c_out}]", f"{c_in}*{c_out}*{k}*{k}",
         c_in * c_out * k * k, c_out),
        ("depthwise", f"[H,W,{c_in}]", f"[H,W,{c_in}]", f"{c_in}*{k}*{k}", dw_w, dw_b),
        ("pointwise", f"[H,W,{c_in}]", f"[H,W,{c_out}]", f"{c_in}*{c_out}*1*1", pw_w, pw_b),
        ("separable", f"[H,W,{c_in}]", f"[H,W,{c_out}]",
         f"{c_in}*{k}*{k} + {c_in}*{c_out}", dw_w + pw_w, dw_b + pw_b),
    ]


def _module_counts(c_in: int, c_out: int, k: int):
    """(weights, with biases) of the real modules, for each row."""
    import torch.nn as nn

    def count(*mods, bias):
        return sum(p.numel() for m in mods for name, p in m.named_parameters()
                   if bias or name == "weight")

    def make(bias):
        std = nn.Conv2d(c_in, c_out, k, bias=bias, device="meta")
        dw = nn.Conv2d(c_in, c_in, k, groups=c_in, bias=bias, device="meta")
        pw = nn.Conv2d(c_in, c_out, 1, bias=bias, device="meta")
        return [(std,), (dw,), (pw,), (dw, pw)]
    with_b = make(True)
    return [(count(*mods, bias=False), count(*mods, bias=True)) for mods in with_b]


def run(args, parser) -> int:
    rows = counts(args.c_in, args.c_out, args.k)
    for (name, *_, w, b), (mw, mwb) in zip(rows, _module_counts(args.c_in, args.c_out, args.k)):
        if (w, w + b) != (mw, mwb):   # the formulas must describe what PyTorch builds
            raise AssertionError(f"{name}: formula gives {w}/{w + b}, nn.Conv2d has {mw}/{mwb}")
    std_w, std_wb = rows[0][4], rows[0][4] + rows[0][5]
    table = []
    for name, cin, cout, formula, w, b in rows:
        table.append({"type": name, "input": cin, "output": cout, "formula": formula,
                      "weights": w, "with_bias": w + b,
                      "reduction_pct": 100.0 * (1 - w / std_w),
                      "reduction_with_bias_pct": 100.0 * (1 - (w + b) / std_wb)})
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    k = args.k
    labels = {"standard": f"standard {k}x{k}", "depthwise": f"depthwise {k}x{k}",
              "pointwise": "pointwise 1x1", "separable": "separable (dw + pw)"}
    head = ["type", "input", "output", "formula", "weights", "with bias", "reduction"]
    lines = [head]
    for r in table:
        red = "-" if r["type"] == "standard" else f"{r['reduction_pct']:.2f}%"
        lines.append([labels[r["type"]], r["input"], r["output"], r["formula"],
                      f"{r['weights']:,}", f"{r['with_bias']:,}", red])
    widths = [max(len(l[i]) for l in lines) for i in range(len(head))]
    print(f"Parameters of a {args.c_in} -> {args.c_out} convolution with a {k}x{k} kernel")
    for i, l in enumerate(lines):
        print("  ".join(c.rjust(w) if j >= 4 else c.ljust(w) for j, (c, w) in
                        enumerate(zip(l, widths))).rstrip())
        if i == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    sep = table[3]
    print(f"\nseparable = depthwise + pointwise: {sep['weights']:,} weights "
          f"({sep['with_bias']:,} with biases) against {std_w:,} ({std_wb:,}) for the standard "
          f"conv: {sep['reduction_pct']:.2f}% fewer ({sep['reduction_with_bias_pct']:.2f}% with "
          "biases). 'reduction' counts weights only.")
    return 0

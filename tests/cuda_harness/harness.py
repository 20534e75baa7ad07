"""Running csrc/cuda's ops in the simulator and checking them: every call twice, under two
simulator settings that must give the same bits, and against the float64 F.conv2d reference.

Other test modules can run the CUDA kernels' values through their own checks the same way:
``torch.ops.fastdw_cudasim.depthwise_conv2d(x, w, b, stride, padding, dilation)`` (and
``..._backward_input``, ``..._backward_weight``) take CPU tensors and the arguments of
``torch.ops.fastdw.*`` (stride, padding, dilation as 2-element lists), once the module from
``build.build()`` is loaded in a process with the ASan runtime preloaded.
"""
from __future__ import annotations

import zlib

import torch
from torch._prims_common import suggest_memory_format

from tests.support.configs import Conv
from tests.support.reference_check import assert_matches, depthwise_expected

LAYOUTS = ["nchw", "channels_last"]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]

# (thread and block order, shared-memory poison). The first is the run whose values are checked;
# the second must agree with it bit for bit.
CHECKED = ("forward", "nan")
OTHER = ("reverse", "finite")


def ops():
    return torch.ops.fastdw_cudasim


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view({8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()])


def _first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if not torch.equal(_bits(x), _bits(y)):
            idx = tuple(int(v) for v in torch.nonzero(_bits(x) != _bits(y))[0])
            return f"result {i} at {idx}: {x[idx].item()!r} vs {y[idx].item()!r}"
    return None


def run_checked(sim, what: str, fn):
    """fn() under CHECKED, then under OTHER: a race through shared memory or between blocks
    (thread/block order) or a read of shared memory no thread wrote (poison) changes the bits.
    Returns the CHECKED result; raises naming which of the two changed it."""
    def run(order, poison):
        sim.configure(order, poison)
        try:
            out = fn()
        finally:
            sim.configure(*CHECKED)
        return out if isinstance(out, tuple) else (out,)

    a, b = run(*CHECKED), run(*OTHER)
    diff = _first_difference(a, b)
    if diff is not None:
        c = run(OTHER[0], CHECKED[1])  # the other order, the same poison
        causes = []
        if _first_difference(a, c) is not None:
            causes.append("the thread/block order changes it (a race)")
        if _first_difference(c, b) is not None:
            causes.append("the shared-memory poison changes it (a read of shared memory no "
                          "thread wrote)")
        raise AssertionError(f"{what}: the simulator settings give different bits: "
                             f"{' and '.join(causes)}; {diff}")
    return a if len(a) > 1 else a[0]


def make_inputs(cfg: Conv, dtype, layout):
    # A seed from the config's text: the same values in every process.
    g = torch.Generator().manual_seed(zlib.crc32(str(cfg).encode()))
    x, w, b = cfg.make(dtype=dtype, channels_last=(layout == "channels_last"), generator=g)
    return x, w, b


def conv_args(cfg: Conv):
    return [list(cfg.stride), list(cfg.padding), list(cfg.dilation)]


def offset_view(t: torch.Tensor, offset: int) -> torch.Tensor:
    """t's values and strides in a storage that starts `offset` elements before them: the data
    pointer is aligned to the element size only (for an odd offset)."""
    storage = torch.empty(t.untyped_storage().nbytes() // t.element_size() + offset,
                          dtype=t.dtype)
    return storage.as_strided(t.shape, t.stride(), offset).copy_(t)


def check_conv(sim, cfg: Conv, dtype, layout, offset: int = 0):
    """Forward (+bias), backward-input and backward-weight (+bias) of one config through the
    simulated CUDA ops against the float64 reference; input and grad_output start `offset`
    elements into their storage."""
    what = f"{cfg} {layout} {dtype}" + (f" offset {offset}" if offset else "")
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x, w, b = make_inputs(cfg, dtype, layout)
    g = torch.randn(cfg.out_shape, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    g = g.to(dtype).contiguous(memory_format=memory_format)
    expected = depthwise_expected(x, w, b, g, cfg.stride, cfg.padding, cfg.dilation)
    if offset:
        x, g = offset_view(x, offset), offset_view(g, offset)
    args = conv_args(cfg)

    out = run_checked(sim, f"{what} forward", lambda: ops().depthwise_conv2d(x, w, b, *args))
    # The raw op's output is dense in the input's suggested memory format (a channels_last
    # tensor with one channel is NCHW-contiguous too).
    assert out.is_contiguous(memory_format=suggest_memory_format(x)), f"{what}: output layout"
    assert_matches(out, expected[0], dtype, f"{what} forward")
    gx = run_checked(sim, f"{what} backward_input",
                     lambda: ops().depthwise_conv2d_backward_input(g, w, list(x.shape), *args))
    gw, gb = run_checked(sim, f"{what} backward_weight",
                         lambda: ops().depthwise_conv2d_backward_weight(g, x, list(w.shape),
                                                                         *args))
    for name, got, exp in zip(("grad_input", "grad_weight", "grad_bias"), (gx, gw, gb),
                              expected[1:]):
        assert_matches(got, exp, dtype, f"{what} {name}")

"""Tensors with more than 2^31 elements on the CPU (issue 8).

A bfloat16 input of shape (1, 64, 5800, 5800) has 2,152,960,000 > 2^31 elements (4.3 GB); the
elements past 2^31 are the last ~4830 rows of the last channel (NCHW) or the last ~16 rows of
all channels (NHWC). Many moderate planes rather than 4 huge ones keep the NCHW kernels'
per-plane float32 scratch small (a 23200x23200 plane needs 2.15 GB of it). Any 32-bit index
arithmetic in a kernel shows up there as a crash or as wrong values, so windows of the results,
including the last rows, columns and channels and the one around element 2^31, are compared with
float64 references computed on small crops.

Memory: the input (4.3 GB) plus one result of the same size at a time: 9.5 GB peak RSS measured
(~1 minute on 2 busy cores). The tests skip when less than 11 GB is available.
"""
from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F

import fastdw  # noqa: F401  (registers torch.ops.fastdw)
from fastdw.accuracy import Expected
from tests.support.reference_check import assert_matches

ops = torch.ops.fastdw
C, H, W = 64, 5800, 5800
PERIOD = 29  # rows of the repeated random block; 29 does not divide any power-of-two offset
NEEDED_GB = 11.0


def _available_gb():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def _around_element_2_31(h, w, channels, channels_last):
    """(channel, row, col) of flat element 2^31 of a (1, channels, h, w) tensor, if it has one."""
    i = 2**31
    if i >= channels * h * w:
        return None
    if channels_last:
        return i % channels, i // channels // w, i // channels % w
    return i // (h * w), i % (h * w) // w, i % w


def _window_ids(out_h, out_w, channels, gen, size=16, channels_last=False):
    """(channel, row0, col0, rows, cols) of windows: the first and last rows/columns/channels,
    the one around flat element 2^31, and random ones."""
    last_h, last_w = max(out_h - size, 0), max(out_w - size, 0)
    wins = [(0, 0, 0), (channels - 1, last_h, last_w), (channels - 1, last_h, 0),
            (channels - 1, 0, last_w), (0, last_h, last_w), (channels // 2, out_h // 2, 7)]
    at = _around_element_2_31(out_h, out_w, channels, channels_last)
    if at is not None:
        c, r, q = at
        wins.append((c, min(max(r - size // 2, 0), last_h), min(max(q - size // 2, 0), last_w)))
    for _ in range(6):
        wins.append((int(torch.randint(channels, (1,), generator=gen)),
                     int(torch.randint(out_h - size + 1, (1,), generator=gen)),
                     int(torch.randint(out_w - size + 1, (1,), generator=gen))))
    return [(c, r, q, min(size, out_h - r), min(size, out_w - q)) for c, r, q in wins]


def _assert_close(got, ref, ref_abs, what):
    """fastdw.accuracy's bound for a bfloat16 result of at most 10 terms (3x3 taps and a
    bias, or 3x3 taps of grad_output)."""
    assert_matches(got, Expected(ref, ref_abs, 10), torch.bfloat16, what)


def _assert_windows(result, windows, reference, what):
    """Each window (channel, row0, col0, rows, cols) of ``result[0]`` against
    ``reference(*window) -> (ref, ref_of_abs)``."""
    for c, r0, c0, nr, nc in windows:
        ref, ref_abs = reference(c, r0, c0, nr, nc)
        _assert_close(result[0, c, r0:r0 + nr, c0:c0 + nc], ref, ref_abs,
                      f"{what} window c{c} r{r0} c{c0}")


def forward_window_reference(x, w, b, stride, padding, dilation, co, r0, c0, nr, nc):
    """float64 F.conv2d of the input crop that output window [r0:r0+nr, c0:c0+nc] of output
    channel co reads (zero padding materialised explicitly); returns (ref, ref_of_abs)."""
    m = w.shape[0] // x.shape[1]
    ci = co // m
    kh, kw = w.shape[2], w.shape[3]
    h0 = r0 * stride[0] - padding[0]
    h1 = (r0 + nr - 1) * stride[0] - padding[0] + dilation[0] * (kh - 1) + 1
    w0 = c0 * stride[1] - padding[1]
    w1 = (c0 + nc - 1) * stride[1] - padding[1] + dilation[1] * (kw - 1) + 1
    hh, ww = x.shape[2], x.shape[3]
    crop = x[0, ci, max(h0, 0):min(h1, hh), max(w0, 0):min(w1, ww)].double()
    crop = F.pad(crop, (max(0, -w0), max(0, w1 - ww), max(0, -h0), max(0, h1 - hh)))
    wk = w[co:co + 1].double()
    bk = b[co:co + 1].double()
    ref = F.conv2d(crop[None, None], wk, bk, stride, 0, dilation)[0, 0]
    ref_abs = F.conv2d(crop[None, None].abs(), wk.abs(), bk.abs(), stride, 0, dilation)[0, 0]
    assert ref.shape == (nr, nc), (ref.shape, nr, nc)
    return ref, ref_abs


def backward_input_window_reference(g, w, in_channels, stride, padding, dilation, ci, r0, c0,
                                    nr, nc):
    """float64 grad_input[0, ci, r0:r0+nr, c0:c0+nc] by the definition: the sum over output
    positions o and taps k with o * stride - padding + k * dilation = input position, of
    grad_output[o] * w[k]. Gathers only the grad_output elements it needs."""
    m = w.shape[0] // in_channels
    kh, kw = w.shape[2], w.shape[3]
    oh_max, ow_max = g.shape[2], g.shape[3]
    ih = torch.arange(r0, r0 + nr)[:, None]
    iw = torch.arange(c0, c0 + nc)[None, :]
    acc = torch.zeros(nr, nc, dtype=torch.float64)
    acc_abs = torch.zeros(nr, nc, dtype=torch.float64)
    for q in range(m):
        co = ci * m + q
        plane = g[0, co]
        for i in range(kh):
            nh = ih + padding[0] - i * dilation[0]
            for j in range(kw):
                nw = iw + padding[1] - j * dilation[1]
                valid = ((nh % stride[0] == 0) & (nw % stride[1] == 0) & (nh >= 0) & (nw >= 0)
                         & (nh // stride[0] < oh_max) & (nw // stride[1] < ow_max))
                oh = (nh // stride[0]).clamp(0, oh_max - 1).expand(nr, nc)
                ow = (nw // stride[1]).clamp(0, ow_max - 1).expand(nr, nc)
                vals = plane[oh, ow].double() * float(w[co, 0, i, j])
                acc += torch.where(valid, vals, 0.0)
                acc_abs += torch.where(valid, vals.abs(), 0.0)
    return acc, acc_abs


def test_window_references_match_autograd():
    """The crop/gather references used below agree with F.conv2d and its autograd on a small
    problem (so the large tests check fastdw, not the references)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, 23, 19, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 1, 3, 5, generator=gen, dtype=torch.float64)
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    for stride, padding, dilation in [((1, 1), (1, 2), (1, 1)), ((3, 2), (2, 1), (2, 1))]:
        out = F.conv2d(x, w, b, stride, padding, dilation, 3)
        g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
        (gx,) = torch.autograd.grad(out, x, g)
        for co, r0, c0, nr, nc in _window_ids(out.shape[2], out.shape[3], 6, gen, size=4):
            ref, _ = forward_window_reference(x.detach(), w, b, stride, padding, dilation, co,
                                              r0, c0, nr, nc)
            torch.testing.assert_close(ref, out[0, co, r0:r0 + nr, c0:c0 + nc].detach())
        for ci, r0, c0, nr, nc in _window_ids(23, 19, 3, gen, size=5):
            ref, _ = backward_input_window_reference(g, w, 3, stride, padding, dilation, ci, r0,
                                                     c0, nr, nc)
            torch.testing.assert_close(ref, gx[0, ci, r0:r0 + nr, c0:c0 + nc])


@pytest.fixture(scope="module")
def big_input():
    """bfloat16 (1, 64, 5800, 5800), NCHW: a random 29-row block per channel repeated down the
    plane (one cheap copy instead of 2^31 random draws), then unique random last rows."""
    available = _available_gb()
    if available < NEEDED_GB:
        pytest.skip(f"needs ~{NEEDED_GB:.0f} GB of free memory, {available:.1f} GB available")
    gen = torch.Generator().manual_seed(0)
    x = torch.empty(1, C, H, W, dtype=torch.bfloat16)
    assert x.numel() > 2**31
    block = torch.randn(C, 1, PERIOD, W, generator=gen).to(torch.bfloat16)
    x.view(C, H // PERIOD, PERIOD, W).copy_(block.expand(C, H // PERIOD, PERIOD, W))
    x[0, :, -70:] = torch.randn(C, 70, W, generator=gen).to(torch.bfloat16)
    yield x
    del x
    gc.collect()


@pytest.fixture(scope="module")
def small_weights():
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(C, 1, 3, 3, generator=gen).to(torch.bfloat16),
            torch.randn(C, generator=gen).to(torch.bfloat16))


@pytest.mark.slow
def test_forward_over_2_31_elements_nchw(big_input, small_weights):
    """Input and output both over 2^31 elements (stride 1, 3x3, padding 1)."""
    x = big_input
    w, b = small_weights
    conv = ((1, 1), (1, 1), (1, 1))
    out = ops.depthwise_conv2d(x, w, b, *map(list, conv))
    try:
        assert out.shape == x.shape and out.numel() > 2**31
        _assert_windows(out, _window_ids(H, W, C, torch.Generator().manual_seed(2)),
                        lambda *win: forward_window_reference(x, w, b, *conv, *win), "forward")
    finally:
        del out
        gc.collect()


@pytest.mark.slow
def test_backward_input_over_2_31_elements_nchw(big_input, small_weights):
    """grad_output and grad_input both over 2^31 elements (the input reused as grad_output)."""
    g = big_input
    w, _ = small_weights
    conv = ((1, 1), (1, 1), (1, 1))
    gi = ops.depthwise_conv2d_backward_input(g, w, list(g.shape), *map(list, conv))
    try:
        assert gi.shape == g.shape
        _assert_windows(gi, _window_ids(H, W, C, torch.Generator().manual_seed(3)),
                        lambda *win: backward_input_window_reference(g, w, C, *conv, *win),
                        "grad_input")
    finally:
        del gi
        gc.collect()


@pytest.mark.slow
def test_strided_forward_and_backward_input_over_2_31_elements_channels_last(big_input,
                                                                             small_weights):
    """channels_last (the same 4.3 GB, reinterpreted as NHWC), stride 3, dilation 2: the
    forward reads up to the last input row; backward-input writes a >2^31-element grad_input."""
    x = big_input.view(1, H, W, C).permute(0, 3, 1, 2)
    assert x.is_contiguous(memory_format=torch.channels_last) and x.numel() > 2**31
    w, b = small_weights
    conv = ((3, 3), (2, 2), (2, 2))
    out = ops.depthwise_conv2d(x, w, b, *map(list, conv))
    oh, ow = (H + 4 - 4 - 1) // 3 + 1, (W + 4 - 4 - 1) // 3 + 1
    assert out.shape == (1, C, oh, ow) and out.is_contiguous(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(4)
    _assert_windows(out, _window_ids(oh, ow, C, gen),
                    lambda *win: forward_window_reference(x, w, b, *conv, *win),
                    "channels_last forward")
    gi = ops.depthwise_conv2d_backward_input(out, w, list(x.shape), *map(list, conv))
    try:
        assert gi.shape == x.shape and gi.is_contiguous(memory_format=torch.channels_last)
        _assert_windows(gi, _window_ids(H, W, C, gen, channels_last=True),
                        lambda *win: backward_input_window_reference(out, w, C, *conv, *win),
                        "channels_last grad_input")
    finally:
        del gi, out
        gc.collect()

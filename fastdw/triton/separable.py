"""Fused depthwise + pointwise convolution in Triton: ``y = pw(act(dw(x) + b_dw)) + b_pw``.

One file for the op (kernels, launchers, op registration, autograd), as in Liger-Kernel.

Forward, one kernel: each program owns BLOCK_P output pixels (flattened over N, OH, OW) and
BLOCK_CO output channels. It walks the input channels in BLOCK_CI chunks; per chunk it computes
the depthwise tile [BLOCK_P, BLOCK_CI] in fp32 registers (kh x kw taps, any stride, padding and
dilation), adds the depthwise bias, applies the activation, casts to the input dtype and feeds
it to ``tl.dot`` with the matching [BLOCK_CI, BLOCK_CO] slice of the pointwise weight (fp32
accumulation). The depthwise intermediate never touches memory.

Backward, two kernels plus fastdw's depthwise backward ops, and nothing saved but the inputs:
  * ``_sep_bwd_mid_kernel`` (grid: pixel tiles x input-channel tiles) recomputes the depthwise
    tile and writes ``grad_mid = (grad_out @ W_pw) * act'(mid)``, the gradient of the depthwise
    output (pre-activation);
  * ``_sep_bwd_pw_kernel`` (grid: C_out tiles x C_in tiles x pixel splits) recomputes
    ``act(mid)`` and accumulates ``grad_out^T @ act(mid)`` and ``sum(grad_out)`` over its split
    of the pixels; the host sums the few split partials (no atomics: deterministic);
  * ``torch.ops.fastdw.depthwise_conv2d_backward_input/_weight`` turn ``grad_mid`` into the
    gradients of x, dw_weight and dw_bias.

Precision: fp16/bf16 inputs keep the activation tile in the input dtype for ``tl.dot`` (as the
composed path stores it) and accumulate in fp32. fp32 inputs use TF32 for the pointwise dot
exactly when ``torch.backends.cudnn.allow_tf32`` is set (PyTorch's switch for convolutions,
default True), so the fused op rounds like ``F.conv2d`` 1x1 would; the depthwise part is always
fp32 FMA.

The fused kernels handle depth multiplier 1 and fp32/fp16/bf16 only (see ``unsupported_reason``);
fastdw.separable falls back to the composed path otherwise.

Under TRITON_INTERPRET=1 (set before this module is imported) the kernels are interpreted, run on
CPU tensors, and use a single small block config; the ops are then plain ``custom_op``s with shape
-only fake kernels, because interpreted kernels cannot be traced into a graph. On GPU the ops are
``triton_op``s launched through ``wrap_triton``, so torch.compile sees the kernels.
"""
from __future__ import annotations

import functools
import warnings
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.autograd.function import _SingleLevelFunction
from torch.library import triton_op, wrap_triton
from triton.runtime.jit import JITFunction

from .._autograd import add_optional, autograd_kernel, call_below_autograd
from .._layouts import kernel_memory_format as _kernel_memory_format
from ..activations import ACTIVATIONS
from ..geometry import output_hw

ACTIVATION_CODES = {name: a.triton_code for name, a in ACTIVATIONS.items()}
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Pixel split of the pointwise weight-gradient reduction: each split covers about this many output
# pixels, with at most _PW_GRAD_MAX_SPLITS splits (partials are [splits, C_out, C_in] fp32).
_PW_GRAD_PIXELS_PER_SPLIT = 4096
_PW_GRAD_MAX_SPLITS = 128


# ---- kernels ------------------------------------------------------------------------------

@triton.jit
def _act(v, ACT: tl.constexpr):
    if ACT == 1:
        v = tl.maximum(v, 0.0)
    elif ACT == 2:
        v = tl.minimum(tl.maximum(v, 0.0), 6.0)
    elif ACT == 3:
        v = 0.5 * v * (1.0 + tl.erf(v * 0.7071067811865476))
    return v


@triton.jit
def _act_backward(grad, v, ACT: tl.constexpr):
    """grad * act'(v), with PyTorch's conventions at the kinks (relu'(0) = 0, relu6'(0|6) = 0)."""
    if ACT == 1:
        grad = tl.where(v > 0.0, grad, 0.0)
    elif ACT == 2:
        grad = tl.where((v > 0.0) & (v < 6.0), grad, 0.0)
    elif ACT == 3:
        cdf = 0.5 * (1.0 + tl.erf(v * 0.7071067811865476))
        pdf = tl.exp(-0.5 * v * v) * 0.3989422804014327
        grad = grad * (cdf + v * pdf)
    return grad


@triton.jit
def _dot(a, b, acc, DOT_PRECISION: tl.constexpr):
    if DOT_PRECISION == "upcast":
        # Interpreter only: its tl.dot multiplies bf16 bit patterns (stored as uint16). bf16
        # products are exact in fp32, so fp32 operands give what the tensor cores give.
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    return acc


@triton.jit
def _dw_row(acc, x_rows, w_ptr, ih, iw0, pc_mask, p_mask, offs_c, c_mask, kh,
            H, W, sx_h, sx_w, DIL_W, KH: tl.constexpr, KW: tl.constexpr):
    """Adds the KW taps of kernel row kh to acc [BLOCK_P, BLOCK_C]."""
    row_ok = p_mask & (ih >= 0) & (ih < H)
    row_ptrs = x_rows + (ih * sx_h)[:, None]
    for kw in tl.static_range(KW):
        iw = iw0 + kw * DIL_W
        ok = row_ok & (iw >= 0) & (iw < W)
        xv = tl.load(row_ptrs + (iw * sx_w)[:, None], mask=ok[:, None] & pc_mask, other=0.0)
        wv = tl.load(w_ptr + offs_c * (KH * KW) + kh * KW + kw, mask=c_mask, other=0.0)
        acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
    return acc


@triton.jit
def _dw_tile(x_ptr, w_ptr, b_ptr, n, oh, ow, p_mask, offs_c, c_mask,
             H, W, sx_n, sx_c, sx_h, sx_w,
             STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
             KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr,
             BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Depthwise conv (+ bias) of BLOCK_P pixels x BLOCK_C channels, fp32, pre-activation.

    Weight is (C, 1, KH, KW) contiguous. Small kernels are fully unrolled; large ones loop over
    rows so compile time stays bounded."""
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    x_rows = x_ptr + (n * sx_n)[:, None] + (offs_c * sx_c)[None, :]
    pc_mask = p_mask[:, None] & c_mask[None, :]
    ih0 = oh * STRIDE_H - PAD_H
    iw0 = ow * STRIDE_W - PAD_W
    if KH * KW <= 49:
        for kh in tl.static_range(KH):
            acc = _dw_row(acc, x_rows, w_ptr, ih0 + kh * DIL_H, iw0, pc_mask, p_mask, offs_c,
                          c_mask, kh, H, W, sx_h, sx_w, DIL_W, KH, KW)
    else:
        for kh in range(KH):
            acc = _dw_row(acc, x_rows, w_ptr, ih0 + kh * DIL_H, iw0, pc_mask, p_mask, offs_c,
                          c_mask, kh, H, W, sx_h, sx_w, DIL_W, KH, KW)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def _pixel_coords(offs_p, OH, OW):
    ow = offs_p % OW
    t = offs_p // OW
    return t // OH, t % OH, ow


@triton.jit
def _pixel_block(N_PIX, OH, OW, BLOCK_P: tl.constexpr):
    """This program's BLOCK_P output pixels (axis 0 of the grid): their mask and (n, oh, ow)."""
    offs_p = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    n, oh, ow = _pixel_coords(offs_p, OH, OW)
    return offs_p < N_PIX, n, oh, ow


def _configs(gpu):
    """Autotune configs: a handful on GPU, one small config under the interpreter."""
    if _INTERPRETING:
        return [triton.Config(dict(BLOCK_P=16, BLOCK_CI=16, BLOCK_CO=16), num_warps=1)]
    return [triton.Config(dict(zip(("BLOCK_P", "BLOCK_CI", "BLOCK_CO"), c[:3])),
                          num_warps=c[3], num_stages=c[4]) for c in gpu]


# TRITON_INTERPRET=1 at import time makes @triton.jit return interpreted functions.
_INTERPRETING = not isinstance(_act, JITFunction)
# (BLOCK_P, BLOCK_CI, BLOCK_CO, num_warps, num_stages)
_FWD_GPU = [(64, 32, 32, 4, 2), (64, 32, 64, 4, 2), (128, 32, 64, 8, 2), (128, 16, 128, 8, 2),
            (64, 64, 128, 8, 2), (32, 32, 128, 4, 2)]
_BWD_MID_GPU = [(64, 32, 32, 4, 2), (64, 64, 32, 4, 2), (128, 32, 32, 8, 2), (64, 32, 64, 4, 2),
                (128, 16, 64, 4, 2)]
_BWD_PW_GPU = [(32, 64, 64, 4, 2), (64, 32, 64, 4, 2), (32, 32, 64, 4, 2), (64, 64, 32, 4, 2),
               (64, 128, 64, 8, 2)]
# Shape keys (sx_c distinguishes NCHW from channels_last); Triton adds the tensor dtypes.
_KEY = ["N_PIX", "C_IN", "C_OUT", "KH", "KW", "STRIDE_H", "STRIDE_W", "sx_c"]


@triton.autotune(configs=_configs(_FWD_GPU), key=_KEY)
@triton.jit
def _sep_fwd_kernel(
    x_ptr, dw_w_ptr, dw_b_ptr, pw_w_ptr, pw_b_ptr, y_ptr,
    N_PIX, C_IN, C_OUT, H, W, OH, OW,
    sx_n, sx_c, sx_h, sx_w, sy_n, sy_c, sy_h, sy_w,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    KH: tl.constexpr, KW: tl.constexpr, ACT: tl.constexpr,
    HAS_DW_BIAS: tl.constexpr, HAS_PW_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_CO: tl.constexpr,
):
    p_mask, n, oh, ow = _pixel_block(N_PIX, OH, OW, BLOCK_P)
    pid_co = tl.program_id(1).to(tl.int64)
    offs_co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    co_mask = offs_co < C_OUT

    acc = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
    for ci0 in range(0, C_IN, BLOCK_CI):
        offs_ci = (ci0 + tl.arange(0, BLOCK_CI)).to(tl.int64)
        ci_mask = offs_ci < C_IN
        mid = _dw_tile(x_ptr, dw_w_ptr, dw_b_ptr, n, oh, ow, p_mask, offs_ci, ci_mask,
                       H, W, sx_n, sx_c, sx_h, sx_w, STRIDE_H, STRIDE_W, PAD_H, PAD_W,
                       DIL_H, DIL_W, KH, KW, HAS_DW_BIAS, BLOCK_P, BLOCK_CI)
        a = _act(mid, ACT).to(pw_w_ptr.dtype.element_ty)
        # [BLOCK_CI, BLOCK_CO] slice of the (C_OUT, C_IN) pointwise weight, transposed
        w = tl.load(pw_w_ptr + offs_co[None, :] * C_IN + offs_ci[:, None],
                    mask=ci_mask[:, None] & co_mask[None, :], other=0.0)
        acc = _dot(a, w, acc, DOT_PRECISION)
    if HAS_PW_BIAS:
        acc += tl.load(pw_b_ptr + offs_co, mask=co_mask, other=0.0).to(tl.float32)[None, :]
    y_ptrs = y_ptr + (n * sy_n + oh * sy_h + ow * sy_w)[:, None] + (offs_co * sy_c)[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=p_mask[:, None] & co_mask[None, :])


@triton.autotune(configs=_configs(_BWD_MID_GPU), key=_KEY)
@triton.jit
def _sep_bwd_mid_kernel(
    x_ptr, dw_w_ptr, dw_b_ptr, pw_w_ptr, g_ptr, gm_ptr,
    N_PIX, C_IN, C_OUT, H, W, OH, OW,
    sx_n, sx_c, sx_h, sx_w, sg_n, sg_c, sg_h, sg_w, sm_n, sm_c, sm_h, sm_w,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    KH: tl.constexpr, KW: tl.constexpr, ACT: tl.constexpr,
    HAS_DW_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_CO: tl.constexpr,
):
    """grad_mid[p, ci] = act'(mid[p, ci]) * sum_co grad_out[p, co] * W_pw[co, ci]."""
    p_mask, n, oh, ow = _pixel_block(N_PIX, OH, OW, BLOCK_P)
    pid_ci = tl.program_id(1).to(tl.int64)
    offs_ci = pid_ci * BLOCK_CI + tl.arange(0, BLOCK_CI)
    ci_mask = offs_ci < C_IN

    g_rows = g_ptr + (n * sg_n + oh * sg_h + ow * sg_w)[:, None]
    grad_a = tl.zeros((BLOCK_P, BLOCK_CI), dtype=tl.float32)
    for co0 in range(0, C_OUT, BLOCK_CO):
        offs_co = (co0 + tl.arange(0, BLOCK_CO)).to(tl.int64)
        co_mask = offs_co < C_OUT
        g = tl.load(g_rows + (offs_co * sg_c)[None, :], mask=p_mask[:, None] & co_mask[None, :],
                    other=0.0)                                            # [BLOCK_P, BLOCK_CO]
        w = tl.load(pw_w_ptr + offs_co[:, None] * C_IN + offs_ci[None, :],
                    mask=co_mask[:, None] & ci_mask[None, :], other=0.0)  # [BLOCK_CO, BLOCK_CI]
        grad_a = _dot(g, w, grad_a, DOT_PRECISION)
    mid = _dw_tile(x_ptr, dw_w_ptr, dw_b_ptr, n, oh, ow, p_mask, offs_ci, ci_mask,
                   H, W, sx_n, sx_c, sx_h, sx_w, STRIDE_H, STRIDE_W, PAD_H, PAD_W,
                   DIL_H, DIL_W, KH, KW, HAS_DW_BIAS, BLOCK_P, BLOCK_CI)
    grad_mid = _act_backward(grad_a, mid, ACT)
    gm_ptrs = gm_ptr + (n * sm_n + oh * sm_h + ow * sm_w)[:, None] + (offs_ci * sm_c)[None, :]
    tl.store(gm_ptrs, grad_mid.to(gm_ptr.dtype.element_ty),
             mask=p_mask[:, None] & ci_mask[None, :])


@triton.autotune(configs=_configs(_BWD_PW_GPU), key=_KEY)
@triton.jit
def _sep_bwd_pw_kernel(
    x_ptr, dw_w_ptr, dw_b_ptr, g_ptr, part_w_ptr, part_b_ptr,
    N_PIX, C_IN, C_OUT, H, W, OH, OW, PIX_PER_SPLIT,
    sx_n, sx_c, sx_h, sx_w, sg_n, sg_c, sg_h, sg_w,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    KH: tl.constexpr, KW: tl.constexpr, ACT: tl.constexpr,
    HAS_DW_BIAS: tl.constexpr, HAS_PW_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_CO: tl.constexpr,
):
    """Split s of: part_w[s] = grad_out^T @ act(mid) and part_b[s] = sum_p grad_out, over the
    pixels [s * PIX_PER_SPLIT, (s + 1) * PIX_PER_SPLIT)."""
    pid_co = tl.program_id(0).to(tl.int64)
    pid_ci = tl.program_id(1).to(tl.int64)
    pid_s = tl.program_id(2).to(tl.int64)
    offs_co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    co_mask = offs_co < C_OUT
    offs_ci = pid_ci * BLOCK_CI + tl.arange(0, BLOCK_CI)
    ci_mask = offs_ci < C_IN
    p_start = pid_s * PIX_PER_SPLIT
    p_end = tl.minimum(p_start + PIX_PER_SPLIT, N_PIX)

    acc = tl.zeros((BLOCK_CO, BLOCK_CI), dtype=tl.float32)
    acc_b = tl.zeros((BLOCK_CO,), dtype=tl.float32)
    for it in range(0, tl.cdiv(PIX_PER_SPLIT, BLOCK_P)):
        offs_p = p_start + it * BLOCK_P + tl.arange(0, BLOCK_P)
        p_mask = offs_p < p_end
        n, oh, ow = _pixel_coords(offs_p, OH, OW)
        mid = _dw_tile(x_ptr, dw_w_ptr, dw_b_ptr, n, oh, ow, p_mask, offs_ci, ci_mask,
                       H, W, sx_n, sx_c, sx_h, sx_w, STRIDE_H, STRIDE_W, PAD_H, PAD_W,
                       DIL_H, DIL_W, KH, KW, HAS_DW_BIAS, BLOCK_P, BLOCK_CI)
        a = tl.where(p_mask[:, None], _act(mid, ACT), 0.0).to(g_ptr.dtype.element_ty)
        g_cols = (n * sg_n + oh * sg_h + ow * sg_w)[None, :]
        g = tl.load(g_ptr + (offs_co * sg_c)[:, None] + g_cols,
                    mask=co_mask[:, None] & p_mask[None, :], other=0.0)   # [BLOCK_CO, BLOCK_P]
        acc = _dot(g, a, acc, DOT_PRECISION)
        if HAS_PW_BIAS:
            acc_b += tl.sum(g.to(tl.float32), axis=1)
    pw_ptrs = part_w_ptr + pid_s * C_OUT * C_IN + offs_co[:, None] * C_IN + offs_ci[None, :]
    tl.store(pw_ptrs, acc, mask=co_mask[:, None] & ci_mask[None, :])
    if HAS_PW_BIAS:
        tl.store(part_b_ptr + pid_s * C_OUT + offs_co, acc_b, mask=co_mask & (pid_ci == 0))


# ---- launchers ----------------------------------------------------------------------------

if _INTERPRETING:
    def wrap_triton(kernel):  # noqa: F811
        """Interpreted kernels cannot be traced into a graph (and older torch rejects them):
        launch them directly. On GPU this is torch.library.wrap_triton, called by that name so
        triton_op can find the kernels in the launchers' source."""
        return kernel


def unsupported_reason(input: torch.Tensor, dw_weight: torch.Tensor) -> Optional[str]:
    """Why the fused kernels cannot take these (validated) arguments, or None when they can."""
    if input.dtype not in SUPPORTED_DTYPES:
        return f"the fused kernel supports float32, float16 and bfloat16, not {input.dtype}"
    if dw_weight.shape[0] != input.shape[1]:
        return (f"the fused kernel needs depth multiplier 1, got "
                f"{dw_weight.shape[0] // input.shape[1]}")
    return None


def _dot_precision(dtype: torch.dtype) -> str:
    """How the pointwise ``tl.dot`` treats its operands: fp32 uses TF32 exactly when
    ``torch.backends.cudnn.allow_tf32`` is set (as F.conv2d does); see ``_dot`` for 'upcast'."""
    if dtype == torch.float32 and torch.backends.cudnn.allow_tf32:
        return "tf32"
    if dtype == torch.bfloat16 and _INTERPRETING:
        return "upcast"
    return "ieee"


def _geometry(input, dw_weight, stride, padding, dilation):
    n, c_in, h, w = input.shape
    kh, kw = dw_weight.shape[2], dw_weight.shape[3]
    oh, ow = output_hw((h, w), (kh, kw), stride, padding, dilation)
    return n, c_in, h, w, kh, kw, oh, ow


def _forward_alloc(input, dw_weight, pw_weight, stride, padding, dilation):
    n, _, _, _, _, _, oh, ow = _geometry(input, dw_weight, stride, padding, dilation)
    return input.new_empty((n, pw_weight.shape[0], oh, ow)).contiguous(
        memory_format=_kernel_memory_format(input))


def _forward(input: torch.Tensor, dw_weight: torch.Tensor, dw_bias: Optional[torch.Tensor],
             pw_weight: torch.Tensor, pw_bias: Optional[torch.Tensor], stride: Sequence[int],
             padding: Sequence[int], dilation: Sequence[int], activation: str) -> torch.Tensor:
    y = _forward_alloc(input, dw_weight, pw_weight, stride, padding, dilation)
    n, c_in, h, w, kh, kw, oh, ow = _geometry(input, dw_weight, stride, padding, dilation)
    n_pix, c_out = n * oh * ow, pw_weight.shape[0]
    if y.numel() == 0:
        return y
    dw_weight, pw_weight = dw_weight.contiguous(), pw_weight.contiguous()
    sx = input.stride()
    sy = y.stride()

    def grid(meta):
        return (triton.cdiv(n_pix, meta["BLOCK_P"]), triton.cdiv(c_out, meta["BLOCK_CO"]))

    wrap_triton(_sep_fwd_kernel)[grid](
        input, dw_weight, dw_bias, pw_weight, pw_bias, y,
        n_pix, c_in, c_out, h, w, oh, ow,
        sx[0], sx[1], sx[2], sx[3], sy[0], sy[1], sy[2], sy[3],
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        KH=kh, KW=kw, ACT=ACTIVATION_CODES[activation],
        HAS_DW_BIAS=dw_bias is not None, HAS_PW_BIAS=pw_bias is not None,
        DOT_PRECISION=_dot_precision(input.dtype))
    return y


def _backward_mid_alloc(input, dw_weight, stride, padding, dilation):
    n, c_in, _, _, _, _, oh, ow = _geometry(input, dw_weight, stride, padding, dilation)
    return input.new_empty((n, c_in, oh, ow)).contiguous(
        memory_format=_kernel_memory_format(input))


def _backward_mid(grad_output: torch.Tensor, input: torch.Tensor, dw_weight: torch.Tensor,
                  dw_bias: Optional[torch.Tensor], pw_weight: torch.Tensor,
                  stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                  activation: str) -> torch.Tensor:
    grad_mid = _backward_mid_alloc(input, dw_weight, stride, padding, dilation)
    if grad_mid.numel() == 0:
        return grad_mid
    n, c_in, h, w, kh, kw, oh, ow = _geometry(input, dw_weight, stride, padding, dilation)
    n_pix, c_out = n * oh * ow, pw_weight.shape[0]
    dw_weight, pw_weight = dw_weight.contiguous(), pw_weight.contiguous()
    sx, sg, sm = input.stride(), grad_output.stride(), grad_mid.stride()

    def grid(meta):
        return (triton.cdiv(n_pix, meta["BLOCK_P"]), triton.cdiv(c_in, meta["BLOCK_CI"]))

    wrap_triton(_sep_bwd_mid_kernel)[grid](
        input, dw_weight, dw_bias, pw_weight, grad_output, grad_mid,
        n_pix, c_in, c_out, h, w, oh, ow,
        sx[0], sx[1], sx[2], sx[3], sg[0], sg[1], sg[2], sg[3], sm[0], sm[1], sm[2], sm[3],
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        KH=kh, KW=kw, ACT=ACTIVATION_CODES[activation], HAS_DW_BIAS=dw_bias is not None,
        DOT_PRECISION=_dot_precision(input.dtype))
    return grad_mid


def _pw_grad_splits(n_pix: int) -> Tuple[int, int]:
    """(number of pixel splits, pixels per split) for the pointwise weight gradient."""
    splits = max(1, min(_PW_GRAD_MAX_SPLITS, triton.cdiv(n_pix, _PW_GRAD_PIXELS_PER_SPLIT)))
    return splits, triton.cdiv(n_pix, splits)


def _backward_pointwise_alloc(grad_output, input, has_pw_bias):
    c_out, c_in = grad_output.shape[1], input.shape[1]
    grad_b = grad_output.new_empty((c_out,) if has_pw_bias else (0,))
    return grad_output.new_empty((c_out, c_in)), grad_b


def _backward_pointwise(grad_output: torch.Tensor, input: torch.Tensor, dw_weight: torch.Tensor,
                        dw_bias: Optional[torch.Tensor], stride: Sequence[int],
                        padding: Sequence[int], dilation: Sequence[int], activation: str,
                        has_pw_bias: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """(grad_pw_weight (C_out, C_in), grad_pw_bias (C_out,), or (0,) when has_pw_bias is False)."""
    n, c_in, h, w, kh, kw, oh, ow = _geometry(input, dw_weight, stride, padding, dilation)
    c_out, n_pix = grad_output.shape[1], n * oh * ow
    if n_pix == 0:
        grad_w, grad_b = _backward_pointwise_alloc(grad_output, input, has_pw_bias)
        return grad_w.zero_(), grad_b.zero_()
    splits, pix_per_split = _pw_grad_splits(n_pix)
    part_w = grad_output.new_empty((splits, c_out, c_in), dtype=torch.float32)
    part_b = grad_output.new_empty((splits, c_out if has_pw_bias else 0), dtype=torch.float32)
    dw_weight = dw_weight.contiguous()
    sx, sg = input.stride(), grad_output.stride()

    def grid(meta):
        return (triton.cdiv(c_out, meta["BLOCK_CO"]), triton.cdiv(c_in, meta["BLOCK_CI"]), splits)

    wrap_triton(_sep_bwd_pw_kernel)[grid](
        input, dw_weight, dw_bias, grad_output, part_w, part_b,
        n_pix, c_in, c_out, h, w, oh, ow, pix_per_split,
        sx[0], sx[1], sx[2], sx[3], sg[0], sg[1], sg[2], sg[3],
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        KH=kh, KW=kw, ACT=ACTIVATION_CODES[activation], HAS_DW_BIAS=dw_bias is not None,
        HAS_PW_BIAS=has_pw_bias, DOT_PRECISION=_dot_precision(input.dtype))
    # Summing a few split partials on the host keeps the reduction order fixed (deterministic).
    return part_w.sum(0).to(grad_output.dtype), part_b.sum(0).to(grad_output.dtype)


# ---- op registration ----------------------------------------------------------------------

_CONV = "int[2] stride, int[2] padding, int[2] dilation, str activation"
_SCHEMAS = {
    "forward": ("fastdw::depthwise_separable_conv2d",
                "(Tensor input, Tensor dw_weight, Tensor? dw_bias, Tensor pw_weight, "
                f"Tensor? pw_bias, {_CONV}) -> Tensor"),
    "backward_mid": ("fastdw::depthwise_separable_conv2d_backward_mid",
                     "(Tensor grad_output, Tensor input, Tensor dw_weight, Tensor? dw_bias, "
                     f"Tensor pw_weight, {_CONV}) -> Tensor"),
    "backward_pointwise": ("fastdw::depthwise_separable_conv2d_backward_pointwise",
                           "(Tensor grad_output, Tensor input, Tensor dw_weight, Tensor? dw_bias, "
                           f"{_CONV}, bool has_pw_bias) -> (Tensor, Tensor)"),
}


# Called as observer(op name, args) before each call of the interpreted ops, real or fake:
# fastdw.triton.variants records through this which calls tests and tools make, to compile the
# kernels they need for a GPU that is not there. Unused on GPU (the ops are triton_ops there).
CALL_OBSERVERS = []


def _observed(name, fn):
    @functools.wraps(fn)
    def call(*args):
        for observer in CALL_OBSERVERS:
            observer(name, args)
        return fn(*args)
    return call


def _register(key, impl, fake):
    name, schema = _SCHEMAS[key]
    if not _INTERPRETING:
        return triton_op(name, mutates_args=(), schema=schema)(impl)
    op = torch.library.custom_op(name, mutates_args=(), schema=schema)(_observed(name, impl))
    op.register_fake(_observed(name, fake))
    return op


separable_conv2d = _register(
    "forward", _forward,
    lambda x, dw_w, dw_b, pw_w, pw_b, s, p, d, act: _forward_alloc(x, dw_w, pw_w, s, p, d))
separable_conv2d_backward_mid = _register(
    "backward_mid", _backward_mid,
    lambda g, x, dw_w, dw_b, pw_w, s, p, d, act: _backward_mid_alloc(x, dw_w, s, p, d))
separable_conv2d_backward_pointwise = _register(
    "backward_pointwise", _backward_pointwise,
    lambda g, x, dw_w, dw_b, s, p, d, act, has_b: _backward_pointwise_alloc(g, x, has_b))


# ---- autograd -----------------------------------------------------------------------------
# Reverse mode saves only the inputs; both backward kernels recompute the depthwise tile. The
# last step, from grad_mid to the gradients of x, dw_weight and dw_bias, is fastdw's depthwise
# backward. Forward mode (jvp) materialises the depthwise result: it is the composed path's
# derivative, with PyTorch's own activation derivative. Double backward is not supported here
# (the backward kernels have no autograd and raise); fastdw.depthwise_separable_conv2d takes the
# composed path whenever forward AD or a torch.func transform is active.

class SeparableConv(_SingleLevelFunction):
    """``fastdw::depthwise_separable_conv2d``: pw(act(dw(x) + dw_bias)) + pw_bias."""

    @staticmethod
    def forward(input, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation,
                activation):
        return call_below_autograd(separable_conv2d._opoverload, input, dw_weight, dw_bias,
                                   pw_weight, pw_bias, stride, padding, dilation, activation)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, activation = \
            inputs
        saved = (input, dw_weight, dw_bias, pw_weight)
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)
        ctx.conv = (stride, padding, dilation, activation)
        ctx.has_pw_bias = pw_bias is not None
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad):
        grads = [None] * 9
        if grad is None:
            return tuple(grads)
        input, dw_weight, dw_bias, pw_weight = ctx.saved_tensors
        stride, padding, dilation, activation = ctx.conv
        need_x, need_dw_w, need_dw_b, need_pw_w, need_pw_b = ctx.needs_input_grad[:5]
        grad = grad.contiguous(memory_format=_kernel_memory_format(input))
        if need_x or need_dw_w or need_dw_b:
            grad_mid = separable_conv2d_backward_mid(grad, input, dw_weight, dw_bias, pw_weight,
                                                     stride, padding, dilation, activation)
            if need_x:
                grads[0] = torch.ops.fastdw.depthwise_conv2d_backward_input(
                    grad_mid, dw_weight, list(input.shape), stride, padding, dilation)
            if need_dw_w or need_dw_b:
                gw, gb = torch.ops.fastdw.depthwise_conv2d_backward_weight(
                    grad_mid, input, list(dw_weight.shape), stride, padding, dilation)
                grads[1] = gw if need_dw_w else None
                grads[2] = gb if (need_dw_b and dw_bias is not None) else None
        if need_pw_w or need_pw_b:
            gw, gb = separable_conv2d_backward_pointwise(
                grad, input, dw_weight, dw_bias, stride, padding, dilation, activation,
                ctx.has_pw_bias)
            grads[3] = gw if need_pw_w else None
            grads[4] = gb if (need_pw_b and ctx.has_pw_bias) else None
        return tuple(grads)

    @staticmethod
    def jvp(ctx, t_input, t_dw_weight, t_dw_bias, t_pw_weight, t_pw_bias, *_):
        input, dw_weight, dw_bias, pw_weight = ctx.saved_tensors
        stride, padding, dilation, activation = ctx.conv
        depthwise = torch.ops.fastdw.depthwise_conv2d
        pre = depthwise(input, dw_weight, dw_bias, stride, padding, dilation)
        t_pre = None
        if t_input is not None:
            t_pre = depthwise(t_input, dw_weight, None, stride, padding, dilation)
        if t_dw_weight is not None:
            t_pre = add_optional(t_pre, depthwise(input, t_dw_weight, None, stride, padding, dilation))
        if t_dw_bias is not None:
            t_pre = add_optional(t_pre, t_dw_bias.view(1, -1, 1, 1).expand(pre.shape))
        act = ACTIVATIONS[activation]
        out = None
        if t_pre is not None:
            out = F.conv2d(act.derivative(t_pre, pre), pw_weight[:, :, None, None])
        if t_pw_weight is not None:
            out = add_optional(out, F.conv2d(act.apply(pre), t_pw_weight[:, :, None, None]))
        if t_pw_bias is not None:
            shape = (pre.shape[0], pw_weight.shape[0], *pre.shape[2:])
            out = add_optional(out, t_pw_bias.view(1, -1, 1, 1).expand(shape))
        return out.contiguous(memory_format=_kernel_memory_format(input))


def _not_differentiable(op, what: str):
    """An autograd.Function over ``op`` (a backward kernel of the fused op) that records the
    call and raises if anything differentiates through it: as ATen does for a derivative it
    does not implement, the error comes when a second derivative is asked for, not before."""
    def fail(*_):
        raise RuntimeError(f"fastdw: the fused separable op's {what} kernel has no derivative: "
                           "double backward through the fused op is not supported; for higher "
                           "derivatives compose fastdw.depthwise_conv2d, the activation and a "
                           "1x1 F.conv2d")

    class Function(_SingleLevelFunction):
        @staticmethod
        def forward(*args):
            return call_below_autograd(op, *args)

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        backward = staticmethod(fail)
        jvp = staticmethod(fail)
    return Function


# Registered as the ops' Autograd kernels (over the ones torch.library made for them): forward
# AD and torch.func see SeparableConv's jvp and setup_context, where register_autograd's
# generated Function has neither (a tangent was dropped silently).
_autograd_lib = torch.library.Library("fastdw", "IMPL")
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "(?s).*Overriding a previously registered kernel")
    for _op, _function in (
            (separable_conv2d, SeparableConv),
            (separable_conv2d_backward_mid, _not_differentiable(
                separable_conv2d_backward_mid._opoverload, "backward_mid")),
            (separable_conv2d_backward_pointwise, _not_differentiable(
                separable_conv2d_backward_pointwise._opoverload, "backward_pointwise"))):
        _autograd_lib.impl(_op._opoverload, autograd_kernel(_function, _op._opoverload),
                           "Autograd", with_keyset=True, allow_override=True)

"""Batching rules for ``torch.vmap`` over the three fastdw ops: one kernel call per vmap, never
a per-sample loop (PyTorch's fallback, which warns "BatchedFallback").

Depthwise channels are independent, so a vmapped dimension B folds away:
  * only the per-sample tensor (input or grad_output) is batched: B goes into the batch, N -> B*N;
  * the weight (or bias) is batched too, or it is the weight gradient: B goes into the channels,
    C -> B*C, with each sample's weights as its own group of channels (output channel
    b*C*m + j reads input channel b*C + j // m, exactly the depthwise rule).
"""
from __future__ import annotations

import torch

_ops = torch.ops.fastdw


def _front(t, bdim, size):
    """``t`` with its vmapped dimension first (expanded to ``size`` when it has none)."""
    return t.movedim(bdim, 0) if bdim is not None else t.expand(size, *t.shape)


def _channels_in(t):
    """(B, N, C, H, W) -> (N, B*C, H, W)."""
    return t.transpose(0, 1).flatten(1, 2)


def _channels_out(t, size):
    """(N, B*C, H, W) -> (N, B, C, H, W): the vmapped dimension is 1."""
    return t.unflatten(1, (size, -1))


def _fold(size, sample, sample_dim, params, param_dims, call):
    """One call of ``call(sample, params, batches, channels)`` for a vmap of ``size``: into the
    batch (``batches = size``) when no parameter is batched, else into the channels
    (``channels = size``, each sample's parameters as its own group of channels). Returns the
    result with its vmapped dimension and where it is."""
    if all(d is None for d in param_dims):
        out = call(sample.movedim(sample_dim, 0).flatten(0, 1), params, size, 1)
        return out.unflatten(0, (size, -1)), 0
    params = [None if p is None else _front(p, d, size).flatten(0, 1)
              for p, d in zip(params, param_dims)]
    out = call(_channels_in(_front(sample, sample_dim, size)), params, 1, size)
    return _channels_out(out, size), 1


@torch.library.register_vmap("fastdw::depthwise_conv2d")
def _forward_vmap(info, in_dims, input, weight, bias, stride, padding, dilation):
    def call(x, params, batches, channels):
        return _ops.depthwise_conv2d(x, *params, stride, padding, dilation)
    return _fold(info.batch_size, input, in_dims[0], [weight, bias], in_dims[1:3], call)


@torch.library.register_vmap("fastdw::depthwise_conv2d_backward_input")
def _backward_input_vmap(info, in_dims, grad_output, weight, input_size, stride, padding,
                         dilation):
    n, c, h, w = input_size

    def call(g, params, batches, channels):
        return _ops.depthwise_conv2d_backward_input(g, *params, [batches * n, channels * c, h, w],
                                                    stride, padding, dilation)
    return _fold(info.batch_size, grad_output, in_dims[0], [weight], in_dims[1:2], call)


@torch.library.register_vmap("fastdw::depthwise_conv2d_backward_weight")
def _backward_weight_vmap(info, in_dims, grad_output, input, weight_size, stride, padding,
                          dilation):
    g_dim, x_dim = in_dims[:2]
    size = info.batch_size
    c_out, one, kh, kw = weight_size
    gw, gb = _ops.depthwise_conv2d_backward_weight(
        _channels_in(_front(grad_output, g_dim, size)), _channels_in(_front(input, x_dim, size)),
        [size * c_out, one, kh, kw], stride, padding, dilation)
    return (gw.unflatten(0, (size, -1)), gb.unflatten(0, (size, -1))), (0, 0)

"""depthwise_separable_conv2d and the fastdw.nn modules under forward-mode AD and torch.func, on
the composed path and the fused Triton path (interpreted on CPU), against the F.conv2d
composition. The fused kernels have reverse-mode autograd only: with forward AD or a torch.func
transform active the op takes the composed path (``backend_for`` says why), so tangents are
right on every path."""
import copy

import pytest
import torch
import torch.nn as nn
from torch import func
from torch.autograd import forward_ad as fwAD

import fastdw
from fastdw import reference
from fastdw.nn import DepthwiseConv2d, DepthwiseSeparableConv2d
from fastdw.separable import backend_for, depthwise_separable_conv2d
from tests.support.reference_check import assert_close_to_reference
from tests.support.separable import SEP
from tests.support.triton_mode import import_fused

import_fused()  # before anything imports fastdw.triton compiled: see triton_mode
CASES = [SEP[name] for name in ("k3x3_relu", "k5x5_gelu", "k7x7_relu6_no_biases",
                                "stride2_linear")]


def _tangents(args):
    return [None if t is None else torch.randn_like(t).flip(-1) for t in args]


def _jvp(fn, args, tangents):
    with fwAD.dual_level():
        duals = [None if a is None else fwAD.make_dual(a.detach(), t)
                 for a, t in zip(args, tangents)]
        primal, tangent = fwAD.unpack_dual(fn(*duals))
        assert tangent is not None, "no tangent"
        return primal.clone(), tangent.clone()


def _check_tangents(cfg, dtype, path):
    args = cfg.make(dtype, "cpu")
    tangents = _tangents(args)
    got = _jvp(lambda *a: depthwise_separable_conv2d(*a, **cfg.conv_args), args, tangents)
    exp = _jvp(lambda *a: reference.depthwise_separable_conv2d(*a, **cfg.conv_args),
               [None if a is None else a.double() for a in args],
               [None if t is None else t.double() for t in tangents])
    for name, g, e in zip(("primal", "tangent"), got, exp):
        assert_close_to_reference(g, e, dtype, f"{cfg} {path} {name}")


@pytest.mark.parametrize("cfg", CASES, ids=str)
def test_fused_path_tangents(cfg, triton_device):
    x, w = cfg.make(torch.float32, triton_device)[:2]
    assert backend_for(x, w)[0] == "triton"
    with fwAD.dual_level():
        dual = fwAD.make_dual(x.detach(), torch.ones_like(x))
        backend, why = backend_for(dual, w)
    assert backend == "composed" and "forward-mode AD" in why
    _check_tangents(cfg, torch.float32, "fused")


@pytest.mark.parametrize("cfg", CASES, ids=str)
def test_composed_path_tangents_and_gradcheck(cfg, composed):
    _check_tangents(cfg, torch.float64, "composed")
    args = tuple(cfg.make(torch.float64, "cpu"))
    assert torch.autograd.gradcheck(
        lambda *a: depthwise_separable_conv2d(*a, **cfg.conv_args), args,
        check_forward_ad=True, check_batched_grad=True, check_batched_forward_grad=True,
        fast_mode=True)


@pytest.mark.parametrize("activation", ["none", "relu", "relu6", "gelu"])
def test_fused_op_called_directly(activation, triton_device):
    """torch.ops.fastdw.depthwise_separable_conv2d itself (what traced and exported graphs
    call): the tangent of every argument, and torch.func.grad, equal the F.conv2d
    composition's."""
    cfg = SEP["stride2_linear"]
    conv = cfg.conv
    x, w, b, pw, pb = (t.detach() for t in cfg.make(torch.float32, triton_device))
    args = (x, w, b, pw.flatten(1), pb)

    def fused(*a):
        return torch.ops.fastdw.depthwise_separable_conv2d(
            *a, list(conv.stride), list(conv.padding), list(conv.dilation), activation)

    def composition(x_, w_, b_, pw_, pb_):
        return reference.depthwise_separable_conv2d(
            x_, w_, b_, pw_[:, :, None, None], pb_, **conv.conv_args,
            activation=None if activation == "none" else activation)

    def as64(tensors):
        return [t.double() for t in tensors]
    tangents = _tangents(args)
    got = _jvp(fused, args, tangents) + (
        func.grad(lambda w_: fused(x, w_, *args[2:]).square().sum())(w),)
    exp = _jvp(composition, as64(args), as64(tangents)) + (
        func.grad(lambda w_: composition(*as64((x, w_, *args[2:]))).square().sum())(w),)
    for name, g, e in zip(("primal", "tangent", "grad dw_weight"), got, exp):
        assert_close_to_reference(g, e, torch.float32, f"{cfg} {activation} {name}")


def test_fused_path_double_backward_raises(triton_device):
    """The fused backward kernels have no derivative: a second derivative raises when it is
    asked for (the first one is still given), never a silently wrong or missing term."""
    x, w, b, pw, pb = SEP["k3x3_relu"].make(torch.float32, triton_device)
    out = depthwise_separable_conv2d(x, w, b, pw, pb, **SEP["k3x3_relu"].conv_args)
    grad_w, = torch.autograd.grad(out.square().sum(), w, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward through the fused op"):
        grad_w.sum().backward()


def test_fused_path_torch_func(triton_device):
    """grad, jacfwd and vmap through the op with the Triton backend selected."""
    cfg = SEP["k3x3_relu"]
    x, w, b, pw, pb = (t.detach() for t in cfg.make(torch.float32, "cpu"))

    def loss(impl):
        return lambda w_: (impl(x, w_, b, pw, pb, **cfg.conv_args) ** 2).sum()
    for name, transform in (("grad", lambda f: func.grad(loss(f))(w)),
                            ("vmap", lambda f: func.vmap(
                                lambda xi: f(xi, w, b, pw, pb, **cfg.conv_args))(
                                    torch.stack([x, x * 2.0])))):
        got = transform(depthwise_separable_conv2d)
        exp = transform(reference.depthwise_separable_conv2d)
        assert_close_to_reference(got, exp.double(), torch.float32, name)


@pytest.mark.parametrize("kind", ["depthwise", "separable"])
def test_modules_forward_ad_and_torch_func(kind, composed):
    """fastdw.nn modules vs their stock equivalents: jvp over parameters and input, grad over
    parameters, vmap over inputs (torch.func.functional_call)."""
    torch.manual_seed(0)
    if kind == "depthwise":
        stock = nn.Conv2d(4, 8, 3, padding=1, groups=4, dtype=torch.float64)
        ours = DepthwiseConv2d.from_conv(copy.deepcopy(stock))
    else:
        ours = DepthwiseSeparableConv2d(4, 6, 3, padding=1, activation="relu",
                                        dtype=torch.float64)
        stock = nn.Sequential(copy.deepcopy(ours.depthwise).to_conv(), nn.ReLU(),
                              copy.deepcopy(ours.pointwise))
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    results = []
    for module in (ours, stock):
        params = {k.replace("0.", "depthwise.").replace("2.", "pointwise."): v
                  for k, v in module.named_parameters()}
        names = list(params)

        def call(p, inp, module=module, names=names):
            keys = dict(zip(names, dict(module.named_parameters())))
            return func.functional_call(module, {keys[k]: v for k, v in p.items()}, (inp,))
        tangents = {k: torch.ones_like(v) for k, v in params.items()}
        results.append([
            func.jvp(call, (params, x), (tangents, torch.ones_like(x)))[1],
            func.grad(lambda p: (call(p, x) ** 2).sum())(params),
            func.vmap(lambda xi: call(params, xi))(torch.stack([x, x.flip(-1)])),
        ])
    for i, (got, exp) in enumerate(zip(*(torch.utils._pytree.tree_leaves(r) for r in results))):
        assert_close_to_reference(got, exp, torch.float64, f"{kind} result {i}")


def test_depthwise_conv2d_issue_values():
    """The issue's numbers: forward tangent 4s, torch.func.grad [[8, 12], [20, 24]]."""
    x = torch.arange(9.).view(1, 1, 3, 3)
    w = torch.ones(1, 1, 2, 2)
    with fwAD.dual_level():
        out = fastdw.depthwise_conv2d(fwAD.make_dual(x, torch.ones(1, 1, 3, 3)), w)
        assert torch.equal(fwAD.unpack_dual(out).tangent, 4 * torch.ones(1, 1, 2, 2))
    assert torch.equal(func.jvp(lambda t: fastdw.depthwise_conv2d(t, w), (x,),
                                (torch.ones_like(x),))[1], 4 * torch.ones(1, 1, 2, 2))
    assert func.grad(lambda t: fastdw.depthwise_conv2d(x, t).sum())(w).flatten().tolist() == \
        [8, 12, 20, 24]

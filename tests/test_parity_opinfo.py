"""fastdw against PyTorch's own conv2d test material: the OpInfo samples and error inputs of
``nn.functional.conv2d`` and the ``nn.Conv2d`` ModuleInfo inputs, made depthwise (multiplier 1
and 2). Forward and gradients in every CPU dtype, float64 gradcheck with forward mode and vmap,
forward-mode AD, torch.func, layouts, exception types. The checks live in tests/support/parity.py.
torch.testing._internal needs the expecttest package (requirements.txt).
"""
import copy

import pytest
import torch
import torch.nn as nn

import fastdw
from fastdw.nn import DepthwiseConv2d
from tests.support.reference_check import assert_close_to_reference
from tests.support import parity

CASES = parity.opinfo_cases()
ERRORS = parity.error_cases()
# torch.func over every sample is the slow part (jacobians, hessians): batched samples with
# multiplier 1 unmarked, the others marked slow.
FUNC_CASES = [pytest.param(c, marks=() if len(c.input_shape) == 4 and c.m == 1
                           else pytest.mark.slow) for c in CASES]


def test_cases_cover_the_opinfo_samples():
    # Every OpInfo conv2d sample became a depthwise case (batched and unbatched, m = 1 and 2).
    assert len(CASES) >= 40
    assert {c.m for c in CASES} == {1, 2} and {len(c.input_shape) for c in CASES} == {3, 4}
    assert any(v == "same" for c in CASES for _, v in c.conv)


@pytest.mark.parametrize("dtype", parity.DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_values_and_layouts(case, dtype):
    parity.check_values(fastdw.depthwise_conv2d, case, dtype)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradcheck_forward_and_reverse(case):
    parity.check_gradcheck(fastdw.depthwise_conv2d, case)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_ad(case):
    parity.check_forward_ad(fastdw.depthwise_conv2d, case)


@pytest.mark.parametrize("case", FUNC_CASES, ids=str)
def test_torch_func(case):
    parity.check_func(fastdw.depthwise_conv2d, case)


@pytest.mark.parametrize("error", ERRORS, ids=str)
def test_error_inputs(error):
    """Same exception type as F.conv2d, and a message naming the argument."""
    parity.assert_raises_like(fastdw.depthwise_conv2d, error.args, error.kwargs, error.expected,
                              str(error), error.culprit)


def test_error_inputs_cover_the_opinfo_ones():
    assert len(ERRORS) >= 5 and {e.culprit for e in ERRORS} >= {"stride", "padding", "dilation"}


# ---- nn.Conv2d ModuleInfo -----------------------------------------------------------------

def _module_inputs(dtype):
    from torch.testing._internal.common_modules import module_db
    info = next(m for m in module_db if m.module_cls is nn.Conv2d)
    for mi in info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=False,
                                      training=True):
        in_channels, _, kernel = mi.constructor_input.args
        for m in (1, 2):
            yield (in_channels, in_channels * m, kernel, dict(mi.constructor_input.kwargs),
                   mi.forward_input.args[0])


MODULE_CASES = [pytest.param(*a, id=f"{a[0]}-{a[1]}-k{a[2]}-{a[3]}-x{tuple(a[4].shape)}")
                for a in _module_inputs(torch.float64)]


def _pair(in_channels, out_channels, kernel, kwargs, dtype, padding_mode="zeros"):
    torch.manual_seed(0)
    conv = nn.Conv2d(in_channels, out_channels, kernel, groups=in_channels,
                     padding_mode=padding_mode, dtype=dtype, **kwargs)
    return conv, DepthwiseConv2d.from_conv(copy.deepcopy(conv))


@pytest.mark.parametrize("dtype", parity.DTYPES, ids=str)
@pytest.mark.parametrize("in_channels,out_channels,kernel,kwargs,x", MODULE_CASES)
def test_module_forward_backward_layouts(in_channels, out_channels, kernel, kwargs, x, dtype):
    """nn.Conv2d's ModuleInfo inputs: output, input and parameter gradients, and layouts for a
    channels_last model with NCHW or channels_last input."""
    for model_cl, input_cl in ((False, False), (True, False), (False, True), (True, True)):
        conv, dw = _pair(in_channels, out_channels, kernel, kwargs, dtype)
        xi = x.to(dtype)
        if model_cl:
            conv, dw = conv.to(memory_format=torch.channels_last), dw.to(
                memory_format=torch.channels_last)
        if input_cl and xi.dim() == 4:
            xi = xi.to(memory_format=torch.channels_last)
        what = f"{dtype} model_cl={model_cl} input_cl={input_cl}"
        results = []
        for module in (conv, dw):
            leaf = xi.detach().requires_grad_()
            out = module(leaf)
            grads = torch.autograd.grad(out, (leaf, module.weight, module.bias),
                                        torch.ones_like(out))
            results.append((out,) + grads)
        # The float64 reference of what fastdw got: the rounded input and parameters.
        conv64 = copy.deepcopy(conv).to(torch.float64)
        leaf64 = xi.detach().double().requires_grad_()
        out64 = conv64(leaf64)
        refs = (out64,) + torch.autograd.grad(out64, (leaf64, conv64.weight, conv64.bias),
                                              torch.ones_like(out64))
        # results = [PyTorch's, fastdw's]: fastdw's values against float64 (PyTorch's own
        # bfloat16/float16 gradients accumulate in the dtype on CPUs without oneDNN's path for
        # it), its layouts against PyTorch's.
        for name, pytorchs, got, ref in zip(("output", "grad_input", "grad_weight",
                                              "grad_bias"), *results, refs):
            parity.assert_same_layout(got, pytorchs, f"{what} {name}")
            assert_close_to_reference(got, ref, dtype, f"{what} {name}")


@pytest.mark.parametrize("in_channels,out_channels,kernel,kwargs,x", MODULE_CASES)
def test_module_torch_func_and_forward_ad(in_channels, out_channels, kernel, kwargs, x):
    """torch.func over the module's parameters (functional_call): grad, jvp, vmap over inputs."""
    from torch import func
    conv, dw = _pair(in_channels, out_channels, kernel, kwargs, torch.float64)
    params = dict(conv.named_parameters())
    tangents = {k: torch.ones_like(v) for k, v in params.items()}
    results = []
    for module in (conv, dw):
        def loss(p, inp):
            return (func.functional_call(module, p, (inp,)) ** 2).sum()
        results.append((
            func.grad(loss)(params, x),
            func.jvp(lambda p: func.functional_call(module, p, (x,)), (params,), (tangents,)),
            func.vmap(lambda inp: func.functional_call(module, params, (inp,)))(
                torch.stack([x, x * 2.0])),
            func.hessian(lambda w: loss(dict(params, weight=w), x))(params["weight"]),
        ))
    for i, (got, exp) in enumerate(zip(*(torch.utils._pytree.tree_leaves(r) for r in results))):
        assert_close_to_reference(got, exp, torch.float64, f"torch.func result {i}")


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("in_channels,out_channels,kernel,kwargs,x", MODULE_CASES)
def test_module_padding_modes(in_channels, out_channels, kernel, kwargs, x, padding_mode):
    """Every padding_mode nn.Conv2d has, with the ModuleInfo's padding (and padding=1)."""
    for kw in (kwargs, dict(kwargs, padding=1)):
        conv, dw = _pair(in_channels, out_channels, kernel, kw, torch.float64, padding_mode)
        assert_close_to_reference(dw(x), conv(x), torch.float64, f"{padding_mode} {kw}")


def test_module_none_input_is_a_type_error():
    for module in (nn.Conv2d(3, 3, 3, groups=3), DepthwiseConv2d(3, 3, 3)):
        with pytest.raises(TypeError):
            module(None)


def test_module_groups_errors_are_value_errors():
    """The OpInfo errors about groups, for the module constructor: nn.Conv2d raises ValueError."""
    for groups in (3, 0, -1):
        with pytest.raises(ValueError):
            nn.Conv2d(2, 2, 3, groups=groups)
        with pytest.raises(ValueError):
            DepthwiseConv2d(2, 2, 3, groups=groups)

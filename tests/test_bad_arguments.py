"""The bad-argument battery: bad arguments give a clear exception that names the argument, never
a crash or a silent wrong answer; through the Python API (dtypes, devices, ranks and shapes,
layouts, non-tensor and out-of-range arguments) and through the raw torch.ops entry points.
Calls that could crash the interpreter run in a child: tests/test_hardening.py."""
import pytest
import torch

import fastdw

X = torch.randn(2, 4, 8, 8)
W = torch.randn(4, 1, 3, 3)


# ---- the public API ---------------------------------------------------------

_SPARSE_X = X.to_sparse()

BAD_ARGUMENTS = [
    # dtypes
    ("bool input", dict(input=X > 0, weight=W > 0), TypeError, "input must be float64"),
    ("uint8 weight", dict(weight=W.to(torch.uint8)), TypeError, "weight must be float64"),
    ("int8 input, int8 weight", dict(input=X.to(torch.int8), weight=W.to(torch.int8)),
     TypeError, "input must be float"),
    ("complex128 both", dict(input=X.to(torch.complex128), weight=W.to(torch.complex128)),
     TypeError, "input must be float"),
    ("int64 bias", dict(bias=torch.arange(4)), TypeError, "bias must be float64"),
    ("half weight, float input", dict(weight=W.half()), TypeError, "weight has dtype"),
    ("float32 bias, float64 input", dict(input=X.double(), weight=W.double(),
                                          bias=torch.randn(4)), TypeError, "bias has dtype"),
    # devices
    ("bias on meta", dict(bias=torch.randn(4, device="meta")), ValueError, "bias is on meta"),
    ("input on meta, weight on cpu", dict(input=X.to("meta")), ValueError,
     "weight is on cpu but input is on meta"),
    ("bias on cpu, rest on meta", dict(input=X.to("meta"), weight=W.to("meta"),
                                       bias=torch.randn(4)), ValueError, "bias is on cpu"),
    # ranks and shapes
    ("0-D input", dict(input=torch.tensor(1.0)), ValueError, "input must be 4-D"),
    ("1-D input", dict(input=torch.randn(8)), ValueError, "input must be 4-D"),
    ("6-D input", dict(input=torch.randn(1, 1, 2, 4, 8, 8)), ValueError, "input must be 4-D"),
    ("0-D weight", dict(weight=torch.tensor(1.0)), ValueError, r"weight must have shape"),
    ("5-D weight", dict(weight=W[None]), ValueError, r"weight must have shape"),
    ("weight with 0 output channels", dict(weight=torch.randn(0, 1, 3, 3)), ValueError,
     r"weight must have shape"),
    ("weight kernel width 0", dict(weight=torch.randn(4, 1, 3, 0)), ValueError,
     r"weight must have shape"),
    ("unbatched input, weight for other C", dict(input=torch.randn(3, 8, 8)), ValueError,
     r"C=3 channels"),
    ("unbatched input with 0 channels", dict(input=torch.randn(0, 8, 8),
                                            weight=torch.randn(0, 1, 3, 3)), ValueError,
     "at least one channel"),
    ("0-D bias", dict(bias=torch.tensor(1.0)), ValueError, r"bias must have shape \(4,\)"),
    ("N=0 but kernel larger than padded input", dict(input=torch.randn(0, 4, 2, 2), padding=0),
     ValueError, "larger than the padded input"),
    # layouts
    ("sparse input", dict(input=_SPARSE_X), TypeError, "input must be a dense"),
    ("sparse weight", dict(weight=W.to_sparse()), TypeError, "weight must be a dense"),
    ("sparse bias", dict(bias=torch.randn(4).to_sparse()), TypeError, "bias must be a dense"),
    # non-tensor arguments
    ("string input", dict(input="x"), TypeError, "input must be a torch.Tensor"),
    ("list bias", dict(bias=[0.0] * 4), TypeError, "bias must be a torch.Tensor"),
    ("int weight", dict(weight=3), TypeError, "weight must be a torch.Tensor"),
    # (a 0-d integer tensor stride and a 1-tuple padding are accepted, as F.conv2d accepts
    # them: tests/test_parity_args.py)
    ("None stride", dict(stride=None), TypeError, "stride must be an int"),
    ("None padding", dict(padding=None), TypeError, "padding must be an int"),
    ("bool stride", dict(stride=True), TypeError, "stride must be an int"),
    ("float padding", dict(padding=1.0), TypeError, "padding must be an int"),
    ("string dilation", dict(dilation="2"), TypeError, "dilation must be an int"),
    ("'SAME' padding", dict(padding="SAME"), ValueError, "padding must be an int, a pair"),
    # zero and negative parameters
    ("negative padding in a pair", dict(padding=(1, -1)), ValueError, "non-negative"),
    ("negative dilation", dict(dilation=-1), ValueError, "dilation must be positive"),
    ("zero dilation in a pair", dict(dilation=(1, 0)), ValueError, "dilation must be positive"),
    ("negative stride in a pair", dict(stride=(-1, 1)), ValueError, "stride must be positive"),
    # out-of-range values
    ("stride 2**63", dict(stride=2**63), (ValueError, TypeError, RuntimeError), "stride"),
    ("padding 2**64", dict(padding=(0, 2**64)), (ValueError, TypeError, RuntimeError),
     "padding"),
    ("dilation 2**63", dict(dilation=2**63), (ValueError, TypeError, RuntimeError), "dilation"),
    ("dilation 2**40", dict(dilation=2**40), ValueError, "dilated kernel height"),
    ("padding 2**40 (output too large)", dict(padding=2**40), RuntimeError, "overflow"),
]
# The first battery (by the argument they name); ids are the kwargs and the expected message.
BAD_ARGUMENTS += [(f"{sorted(kw)} {match}", kw, exc, match) for kw, exc, match in [
    (dict(input=torch.randn(4, 8)), ValueError, "input must be 4-D"),
    (dict(input=torch.randn(1, 2, 4, 8, 8)), ValueError, "input must be 4-D"),
    (dict(weight=torch.randn(4, 3, 3)), ValueError, r"weight must have shape \(C\*m, 1, kh, kw\)"),
    (dict(weight=torch.randn(4, 2, 3, 3)), ValueError, r"weight must have shape"),
    (dict(weight=torch.randn(6, 1, 3, 3)), ValueError, r"C=4 channels"),
    (dict(weight=torch.randn(4, 1, 0, 3)), ValueError, r"weight must have shape"),
    (dict(weight=W.double()), TypeError, "weight has dtype torch.float64 but input"),
    (dict(bias=torch.randn(4).double()), TypeError, "bias has dtype"),
    (dict(bias=torch.randn(5)), ValueError, r"bias must have shape \(4,\)"),
    (dict(bias=torch.randn(4, 1)), ValueError, r"bias must have shape"),
    (dict(input=X.long()), TypeError, "input must be float64, float32, float16 or bfloat16"),
    (dict(input=X.to(torch.complex64)), TypeError, "input must be float"),
    (dict(input=X.tolist()), TypeError, "input must be a torch.Tensor"),
    (dict(weight=None), TypeError, "weight must be a torch.Tensor"),
    (dict(stride=0), ValueError, "stride must be positive"),
    (dict(stride=(1, -2)), ValueError, "stride must be positive"),
    # F.conv2d raises RuntimeError for a 3-element stride (its type is right, its length not)
    (dict(stride=(1, 2, 3)), RuntimeError, "stride must be an int or a pair"),
    (dict(stride=1.5), TypeError, "stride must be an int or a pair"),
    (dict(dilation=0), ValueError, "dilation must be positive"),
    (dict(padding=-1), ValueError, "padding must be non-negative"),
    (dict(padding="full"), ValueError, "padding must be an int, a pair, 'same' or 'valid'"),
    (dict(padding="same", stride=2), ValueError, "padding='same' is not supported for strided"),
    (dict(input=torch.randn(1, 4, 2, 2), padding=0), ValueError, "dilated kernel height .* larger than the padded"),
    (dict(weight=torch.randn(4, 1, 3, 11), padding=1), ValueError, "dilated kernel width"),
    (dict(dilation=5), ValueError, r"dilated kernel height \(11\)"),
    (dict(input=torch.randn(2, 0, 8, 8), weight=torch.randn(0, 1, 3, 3)), ValueError,
     "at least one channel"),
]]


@pytest.mark.parametrize("kwargs,exc,match", [c[1:] for c in BAD_ARGUMENTS],
                         ids=[c[0] for c in BAD_ARGUMENTS])
def test_bad_arguments_battery(kwargs, exc, match):
    args = dict(input=X, weight=W, bias=None, stride=1, padding=1, dilation=1)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        fastdw.depthwise_conv2d(**args)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("which", ["bias", "input"])
def test_cuda_device_mismatch(which):
    args = dict(input=X, weight=W, bias=torch.randn(4))
    if which == "bias":
        args = dict(input=X.cuda(), weight=W.cuda(), bias=torch.randn(4))
    else:
        args["input"] = X.cuda()
    with pytest.raises(ValueError, match="is on"):
        fastdw.depthwise_conv2d(**args, padding=1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU for a device mismatch")
def test_device_mismatch():
    with pytest.raises(ValueError, match="weight is on cuda"):
        fastdw.depthwise_conv2d(X, W.cuda())


def test_meta_device_mismatch():
    with pytest.raises(ValueError, match="weight is on meta"):
        fastdw.depthwise_conv2d(X, W.to("meta"))


@pytest.mark.parametrize("call,match", [
    (lambda: torch.ops.fastdw.depthwise_conv2d(X, W, None, [0, 1], [1, 1], [1, 1]),
     "stride must be >= 1"),
    (lambda: torch.ops.fastdw.depthwise_conv2d(X, W, None, [1, 1], [-1, 1], [1, 1]),
     "padding must be >= 0"),
    (lambda: torch.ops.fastdw.depthwise_conv2d(X, W, None, [1, 1], [1, 1], [1]),
     "dilation must have 2 elements"),
    (lambda: torch.ops.fastdw.depthwise_conv2d(X, torch.randn(3, 1, 3, 3), None, [1, 1], [1, 1],
                                               [1, 1]), "weight must have shape"),
    (lambda: torch.ops.fastdw.depthwise_conv2d(X, W.half(), None, [1, 1], [1, 1], [1, 1]),
     "weight has dtype"),
    (lambda: torch.ops.fastdw.depthwise_conv2d(X[0], W, None, [1, 1], [1, 1], [1, 1]),
     "input must be 4-D"),
    (lambda: torch.ops.fastdw.depthwise_conv2d(X.int(), W.int(), None, [1, 1], [1, 1], [1, 1]),
     "must be float64, float32"),
    (lambda: torch.ops.fastdw.depthwise_conv2d(X, W, None, [1, 1], [0, 0], [9, 9]),
     "larger than the padded input"),
    (lambda: torch.ops.fastdw.depthwise_conv2d_backward_input(
        torch.randn(2, 4, 5, 5), W, [2, 4, 8, 8], [1, 1], [1, 1], [1, 1]),
     "grad_output must have shape"),
    (lambda: torch.ops.fastdw.depthwise_conv2d_backward_weight(
        torch.randn(2, 4, 8, 8), X, [4, 1, 3, 3], [1, 1], [0, 0], [1, 1]),
     "grad_output must have shape"),
])
def test_raw_op_checks(call, match):
    with pytest.raises(RuntimeError, match=match):
        call()

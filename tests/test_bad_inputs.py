"""Bad arguments give a clear exception that names the argument, never a crash or a silent
wrong answer; both through the Python API and through the raw torch.ops entry points."""
import pytest
import torch

import fastdw

X = torch.randn(2, 4, 8, 8)
W = torch.randn(4, 1, 3, 3)


@pytest.mark.parametrize("kwargs,exc,match", [
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
])
def test_bad_arguments(kwargs, exc, match):
    args = dict(input=X, weight=W, bias=None, stride=1, padding=1, dilation=1)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        fastdw.depthwise_conv2d(**args)


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

"""Argument forms and errors as F.conv2d / nn.Conv2d: what PyTorch accepts, fastdw accepts with
the same result; what PyTorch rejects, fastdw rejects with an exception of the type PyTorch
raises (so code written for nn.Conv2d catches it) and a message naming the argument; convert()
never returns a model that fails where the original ran."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fastdw
from fastdw.nn import DepthwiseConv2d
from tests.support import parity

X = torch.randn(1, 2, 6, 6)
W = torch.randn(2, 1, 3, 3)

FORMS = [1, 2, (2,), [2], (1, 2), [1, 2], torch.Size([2]), torch.Size([1, 2]), np.int64(2),
         (np.int64(1), 2), torch.tensor(2), (torch.tensor(1), 2), (1, 2, 3), (), [], 0, -1,
         (0, 1), (1, -1), 1.0, (1.0, 2), True, (True, 1), "same", "valid", "SAME", None,
         range(1, 3), 2**63, torch.tensor(1.0)]


@pytest.mark.parametrize("form", FORMS, ids=repr)
@pytest.mark.parametrize("name", ["stride", "padding", "dilation"])
def test_argument_forms(name, form):
    """Accepted (with F.conv2d's value) exactly when F.conv2d accepts; else the same error
    type, naming the argument."""
    kwargs = {name: form}
    try:
        expected = parity.reference(X, W, **kwargs)
    except Exception as exc:  # noqa: BLE001 - its type is the expectation
        parity.assert_raises_like(fastdw.depthwise_conv2d, (X, W), kwargs, type(exc),
                                  f"{name}={form!r}", name)
        return
    torch.testing.assert_close(fastdw.depthwise_conv2d(X, W, **kwargs), expected)


@pytest.mark.parametrize("bad", [
    dict(input=X.double()), dict(input=X.long(), bias=torch.ones(2)), dict(bias=torch.ones(2).double()),
    dict(bias=torch.ones(3)), dict(weight=torch.randn(2, 2, 3, 3)), dict(input=torch.randn(6, 6)),
    dict(input=torch.randn(1, 2, 2, 2)),
], ids=lambda d: ",".join(f"{k}:{tuple(v.shape)}:{v.dtype}:{v.device}" for k, v in d.items()))
def test_tensor_errors_are_caught_like_pytorchs(bad):
    """Wrong dtypes, shapes and devices: the exception type F.conv2d raises (RuntimeError here)."""
    args = dict(input=X, weight=W, bias=None)
    args.update(bad)
    try:
        F.conv2d(**args, groups=2)
    except Exception as exc:  # noqa: BLE001
        parity.assert_raises_like(fastdw.depthwise_conv2d, (), args, type(exc), str(bad))
    else:
        pytest.fail(f"F.conv2d accepts {bad}")


def test_integer_tensors_raise():
    """F.conv2d convolves int64 tensors on the CPU; fastdw has no integer kernels and says so,
    with an exception code written for F.conv2d's errors catches."""
    with pytest.raises(RuntimeError, match="input must be float64, float32, float16 or bfloat16"):
        fastdw.depthwise_conv2d(X.long(), W.long())


def test_module_errors_are_caught_like_nn_conv2d():
    for x in (torch.randn(1, 3, 6, 6), torch.randn(6, 6), None):
        stock, ours = nn.Conv2d(2, 2, 3, groups=2), DepthwiseConv2d(2, 2, 3)
        try:
            stock(x)
        except Exception as exc:  # noqa: BLE001
            parity.assert_raises_like(ours, (x,), {}, type(exc), f"module input {x!r:.40}",
                                      "input" if x is not None else None)
        else:
            pytest.fail(f"nn.Conv2d accepts {x!r:.40}")


# ---- convert never returns a model that fails where the original ran ----------------------

CONV_KWARGS = [dict(stride=(2,), padding=(1,)), dict(stride=[2], padding=[1], dilation=(2,)),
               dict(padding="same", dilation=(2,)), dict(padding="valid"), dict(padding=(1, 2)),
               dict(stride=torch.Size([2])), dict(stride=np.int64(2)), dict(stride=(1, 2, 3)),
               dict(padding=(1,), padding_mode="reflect"), dict(padding=1, padding_mode="circular"),
               dict(padding=(2, 1), padding_mode="replicate"), dict(padding="same",
                                                                    padding_mode="reflect")]


@pytest.mark.parametrize("kwargs", CONV_KWARGS, ids=str)
def test_convert_matches_or_leaves_alone(kwargs):
    """Every converted layer computes what the stock one does; a layer fastdw could not run
    stays an nn.Conv2d, with the reason in the report."""
    torch.manual_seed(0)
    try:
        stock = nn.Sequential(nn.Conv2d(4, 8, 3, groups=4, **kwargs))
    except Exception:  # noqa: BLE001 - nn.Conv2d refuses it: nothing to convert
        return
    x = torch.randn(2, 4, 9, 9)
    try:
        expected = stock(x)
    except Exception as exc:  # noqa: BLE001
        expected = exc
    converted, report = fastdw.convert(stock)
    if isinstance(converted[0], DepthwiseConv2d):
        if isinstance(expected, Exception):
            with pytest.raises(type(expected)):
                converted(x)
        else:
            torch.testing.assert_close(converted(x), expected, rtol=1e-5, atol=1e-5)
    else:
        assert report.skipped and not report.replaced, report
        assert not isinstance(expected, torch.Tensor) or torch.equal(converted(x), expected)


def test_convert_issue_example():
    conv = nn.Conv2d(4, 4, 3, stride=(2,), padding=(1,), groups=4)
    converted, report = fastdw.convert(nn.Sequential(conv))
    assert len(report.replaced) == 1
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(converted(x), conv(x))

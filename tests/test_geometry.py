"""fastdw.geometry (Python) against the C++ checks and sizes (csrc/depthwise.h,
csrc/depthwise_args.h) and against F.conv2d, case by case: the same output shape, or the same
error."""
import pytest
import torch
import torch.nn.functional as F

import fastdw  # noqa: F401  (registers the ops)
from fastdw import geometry

# (input size, weight size, stride, padding, dilation)
CASES = {
    "3x3": ((2, 3, 7, 9), (3, 1, 3, 3), (1, 1), (1, 1), (1, 1)),
    "multiplier 2, rectangular": ((1, 2, 8, 5), (4, 1, 1, 5), (1, 1), (0, 2), (1, 1)),
    "stride 3 ragged": ((1, 2, 10, 11), (2, 1, 3, 3), (3, 3), (0, 0), (1, 1)),
    "dilation, padding > k/2": ((1, 1, 6, 6), (1, 1, 3, 3), (2, 1), (4, 3), (2, 3)),
    "kernel = padded input": ((1, 1, 3, 4), (1, 1, 5, 6), (1, 1), (1, 1), (1, 1)),
    "kernel > padded input": ((1, 1, 3, 3), (1, 1, 5, 5), (1, 1), (0, 0), (1, 1)),
    "dilated kernel > padded input": ((1, 1, 5, 5), (1, 1, 3, 3), (1, 1), (0, 0), (3, 1)),
    "stride 0": ((1, 1, 5, 5), (1, 1, 3, 3), (0, 1), (0, 0), (1, 1)),
    "negative padding": ((1, 1, 5, 5), (1, 1, 3, 3), (1, 1), (-1, 0), (1, 1)),
    "dilation 0": ((1, 1, 5, 5), (1, 1, 3, 3), (1, 1), (0, 0), (1, 0)),
    "weight not (C*m, 1, kh, kw)": ((1, 2, 5, 5), (3, 1, 3, 3), (1, 1), (0, 0), (1, 1)),
    "empty batch": ((0, 2, 5, 5), (2, 1, 3, 3), (1, 1), (1, 1), (1, 1)),
}


def _run(device, input_size, weight_size, stride, padding, dilation):
    """The op's output shape on ``device`` ('cpu': the C++ checks; 'meta': the fake kernel),
    or the first line of its error."""
    x = torch.randn(input_size, device=device)
    w = torch.randn(weight_size, device=device)
    try:
        return tuple(torch.ops.fastdw.depthwise_conv2d(x, w, None, stride, padding,
                                                       dilation).shape)
    except RuntimeError as e:
        return str(e).splitlines()[0]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_python_and_cpp_agree(case):
    input_size, weight_size, stride, padding, dilation = CASES[case]
    cpp = _run("cpu", *CASES[case])
    assert _run("meta", *CASES[case]) == cpp
    if isinstance(cpp, tuple):
        expected_hw = geometry.output_hw(input_size[2:], weight_size[2:], stride, padding,
                                         dilation)
        assert cpp[2:] == expected_hw
        ref = F.conv2d(torch.randn(input_size), torch.randn(weight_size), None, stride,
                       padding, dilation, groups=input_size[1])
        assert tuple(ref.shape) == cpp


@pytest.mark.parametrize("value, expected", [
    (3, (3, 3)), ((2,), (2, 2)), ([1, 2], (1, 2)), (torch.Size([4, 5]), (4, 5)),
    (torch.tensor(2), (2, 2))])
def test_pair_accepts_what_conv2d_accepts(value, expected):
    assert geometry.pair(value, "stride") == expected


@pytest.mark.parametrize("value, error", [
    ((1, 2, 3), fastdw.ArgumentError), ("2", TypeError), (1.5, TypeError), (True, TypeError),
    ((2**63, 1), fastdw.ArgumentError)])
def test_pair_rejects_what_conv2d_rejects(value, error):
    with pytest.raises(error, match="stride"):
        geometry.pair(value, "stride")


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel lengths")
@pytest.mark.parametrize("kernel, dilation", [((3, 3), (1, 1)), ((4, 2), (1, 3)),
                                              ((2, 5), (2, 1))])
def test_same_padding_matches_conv2d(kernel, dilation):
    """padding='same' gives F.conv2d's output (PyTorch pads one more after when the total is
    odd)."""
    x = torch.randn(1, 2, 7, 8, dtype=torch.float64)
    w = torch.randn(2, 1, *kernel, dtype=torch.float64)
    pad, extra = geometry.same_padding(kernel, dilation, (1, 1))
    ours = F.conv2d(F.pad(x, (pad[1], pad[1] + extra[1], pad[0], pad[0] + extra[0])), w,
                    dilation=dilation, groups=2)
    torch.testing.assert_close(ours, F.conv2d(x, w, padding="same", dilation=dilation,
                                              groups=2))

"""fastdw.accuracy: the one error-bound rule of the tests, `python -m fastdw check` and the
benchmark. Its parts are checked on problems small enough to count by hand, and the rule on
the two things it exists for: it passes what correct float32 arithmetic produces, and it fails
a kernel that drops a single term."""
import functools
import math

import pytest
import torch
import torch.nn.functional as F

from fastdw import accuracy, reference


def _conv(x, w, b, padding=1):
    return F.conv2d(x, w, b, 1, padding, 1, x.shape[1])


def test_terms_and_magnitudes_count_the_products():
    """On a 1x1x3x3 input with a 3x3 kernel, padding 1: the corner output has 4 in-bounds taps
    plus the bias, the centre 9 plus the bias; the magnitude is the sum of |x w| + |b|."""
    x = (torch.arange(1.0, 10.0) * torch.tensor([1, -1, 1.0]).repeat(3)).reshape(1, 1, 3, 3)
    w = -torch.ones(1, 1, 3, 3)
    b = torch.tensor([-0.5])
    out, = accuracy.expected(_conv, [x, w, b])
    assert out.terms[0, 0, 0, 0] == 5 and out.terms[0, 0, 1, 1] == 10
    assert out.magnitude[0, 0, 1, 1] == sum(range(1, 10)) + 0.5
    torch.testing.assert_close(out.value, _conv(x.double(), w.double(), b.double()))


def test_gradient_terms():
    """grad_weight sums N*OH*OW products (fewer at the borders), grad_bias N*OH*OW."""
    x, w, b = torch.randn(2, 3, 5, 6), torch.randn(3, 1, 3, 3), torch.randn(3)
    g = torch.randn(2, 3, 5, 6)
    _, gx, gw, gb = accuracy.expected(_conv, [x, w, b], g)
    assert gb.terms.eq(2 * 5 * 6).all()
    assert gw.terms[0, 0, 1, 1] == 2 * 5 * 6 and gw.terms[0, 0, 0, 0] == 2 * 4 * 5
    assert gx.terms.max() == 9 and gx.terms.min() == 4


def test_gamma_is_the_smaller_of_the_two_bounds():
    u = 2.0 ** -24
    assert accuracy.gamma(4, torch.float32) == pytest.approx(4 * u / (1 - 4 * u))
    n = 10 ** 6
    assert accuracy.gamma(n, torch.float32) == pytest.approx(accuracy.LAMBDA * math.sqrt(n) * u)
    lengths = torch.tensor([4.0, float(n)])
    torch.testing.assert_close(accuracy.gamma(lengths, torch.float32),
                               torch.tensor([4 * u / (1 - 4 * u),
                                             accuracy.LAMBDA * math.sqrt(n) * u],
                                            dtype=torch.float64))
    assert accuracy.gamma(9, torch.bfloat16) == accuracy.gamma(9, torch.float32)  # fp32 sums


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_passes_correct_arithmetic_and_fails_a_dropped_tap(dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 17, 19, generator=gen).to(dtype)
    w = torch.randn(8, 1, 3, 3, generator=gen).to(dtype)
    out, = accuracy.expected(_conv, [x, w, None])
    # Correct float32 arithmetic (PyTorch's kernel on float32 copies), rounded to dtype.
    got = _conv(x.float(), w.float(), None).to(dtype)
    assert accuracy.compare(got, out).ok
    # The same with one tap of one channel dropped: each output misses one |x w|.
    w_dropped = w.clone()
    w_dropped[3, 0, 1, 2] = 0
    wrong = _conv(x.float(), w_dropped.float(), None).to(dtype)
    verdict = accuracy.compare(wrong, out)
    assert not verdict.ok and verdict.first[1] == 3
    assert "beyond the error bound" in verdict.message("dropped tap")


def test_rounded_factors_widen_the_bound():
    """TF32 products (factors rounded to 10 mantissa bits) fail the float32 rule and pass with
    rounded_to='tf32'."""
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(64, 256, generator=gen), torch.randn(256, 32, generator=gen)

    def tf32(t):  # round to nearest with 10 explicit mantissa bits
        bits = t.view(torch.int32)
        return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)
    got = tf32(a) @ tf32(b)
    expected, = accuracy.expected(torch.matmul, [a, b])
    assert not accuracy.compare(got, expected).ok
    assert accuracy.compare(got, expected, rounded_to="tf32").ok


def test_non_finite_elements_must_match_exactly():
    value = torch.tensor([1.0, float("nan"), float("inf"), -float("inf")], dtype=torch.float64)
    expected = accuracy.Expected(value, torch.ones(4, dtype=torch.float64), 1)
    assert accuracy.compare(value.float(), expected).ok
    for wrong in ([1.0, 0.0, float("inf"), -float("inf")],
                  [1.0, float("nan"), -float("inf"), -float("inf")],
                  [float("nan"), float("nan"), float("inf"), -float("inf")]):
        verdict = accuracy.compare(torch.tensor(wrong), expected)
        # The worst ratio is infinite too: a caller that allows a multiple of the bound (the
        # benchmark, against PyTorch's own error) must still fail a non-finite mismatch.
        assert verdict.off == 1 and verdict.worst == math.inf


def test_separable_bound_replaces_the_activation_by_its_lipschitz_constant():
    """The magnitude run of the separable reference scales by L instead of applying GELU, so a
    gradient through GELU' (up to 1.1289) stays within it."""
    gen = torch.Generator().manual_seed(2)
    args = [torch.randn(1, 4, 6, 6, generator=gen), torch.randn(4, 1, 3, 3, generator=gen),
            torch.randn(4, generator=gen), torch.randn(5, 4, 1, 1, generator=gen),
            torch.randn(5, generator=gen)]
    fn = functools.partial(reference.depthwise_separable_conv2d, padding=1, activation="gelu")
    g = torch.randn(1, 5, 6, 6, generator=gen)
    results = accuracy.expected(fn, args, g, functools.partial(fn, bound=True))
    for r in results:
        assert (r.magnitude >= r.value.abs() - 1e-12).all()
    with pytest.raises(ValueError):
        reference.depthwise_separable_conv2d(*args, activation="tanh", bound=True)


def test_benchmark_fails_a_nan_even_against_a_multiple_of_the_bound():
    """The benchmark accepts up to twice PyTorch's own error over the bound; a NaN where the
    reference is finite must fail whatever the multiple."""
    from fastdw.benchmark.verify import relative_error
    value = torch.tensor([1.0, 2.0], dtype=torch.float64)
    expected = accuracy.Expected(value, torch.ones(2, dtype=torch.float64), 1)
    assert relative_error(value.float(), expected).ok()
    assert not relative_error(torch.tensor([1.0, float("nan")]), expected).ok(1e6)

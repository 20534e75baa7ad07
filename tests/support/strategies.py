"""Hypothesis strategies shared by the kernel tests."""
from __future__ import annotations

from hypothesis import strategies as st

from tests.support.configs import Conv


@st.composite
def depthwise_convs(draw, max_kernel: int = 7, max_extra_h: int = 12, max_extra_w: int = 12,
                    max_channel_groups: int = 9):
    """Random valid depthwise convs: kernels up to ``max_kernel`` per side, stride and dilation
    1-3, padding up to kernel + 1, multiplier 1-3, channel counts 1..groups or 8x that (the
    vector paths), sizes just large enough for the dilated kernel plus up to ``max_extra_*``;
    half the draws are square, equal-stride, undilated (the specialised kernel variants)."""
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if draw(st.booleans()):
        kw, sw, dh, dw = kh, sh, 1, 1
    ph, pw = draw(st.integers(0, kh + 1)), draw(st.integers(0, kw + 1))
    h = max(1, dh * (kh - 1) + 1 - 2 * ph) + draw(st.integers(0, max_extra_h))
    w = max(1, dw * (kw - 1) + 1 - 2 * pw) + draw(st.integers(0, max_extra_w))
    c = draw(st.integers(1, max_channel_groups)) * draw(st.sampled_from([1, 8]))
    return Conv(n=draw(st.integers(1, 3)), c=c, h=h, w=w, kh=kh, kw=kw,
                m=draw(st.integers(1, 3)), stride=(sh, sw), padding=(ph, pw),
                dilation=(dh, dw), bias=draw(st.booleans()))

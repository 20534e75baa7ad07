import os

import pytest
from hypothesis import HealthCheck, settings

from tests.support.triton_mode import HAS_CUDA, cudnn_allow_tf32, import_fused

# FASTDW_FUZZ=ci (default): about 200 random configs per property; =long: >= 10,000.
settings.register_profile(
    "ci", max_examples=200, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "long", max_examples=10_000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("FASTDW_FUZZ", "ci"))


@pytest.fixture(params=["cuda"] if HAS_CUDA else ["cpu"])
def triton_device(request, monkeypatch):
    """The device the fused Triton kernels run on: 'cuda' on a GPU; without one, 'cpu' with the
    interpreted kernels (tests/support/triton_mode.py). Strict fp32 (TF32 off): test_tf32
    covers TF32. The test modules that use it import fastdw.triton through import_fused()."""
    if request.param == "cpu":
        if not import_fused().INTERPRETED:
            pytest.skip("fastdw.triton was imported without TRITON_INTERPRET=1; "
                        "the module's *_in_subprocess test runs these tests")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    with cudnn_allow_tf32(False):
        yield request.param


@pytest.fixture
def composed(monkeypatch):
    """The composed separable path (fastdw depthwise + activation + 1x1 conv) on the CPU."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    return "cpu"

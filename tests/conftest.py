import os

from hypothesis import HealthCheck, settings

# FASTDW_FUZZ=ci (default): about 200 random configs per property; =long: >= 10,000.
settings.register_profile(
    "ci", max_examples=200, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "long", max_examples=10_000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("FASTDW_FUZZ", "ci"))

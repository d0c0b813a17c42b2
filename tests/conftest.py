"""Test setup: CPU only, 8 simulated devices for sharding tests, float32 matmuls at full precision."""

import os

# Must happen before jax is imported anywhere: tests run on the CPU and simulate an 8-device mesh.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def lab_cache(tmp_path_factory):
    """One laboratory cache (world, SFT policy, reward models) shared by the demo and notebook tests."""
    return tmp_path_factory.mktemp("lab-cache")

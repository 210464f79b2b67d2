"""Test setup: 8 virtual CPU devices (set before JAX is imported) and a float64 fixture."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def x64():
  """Runs the test with 64-bit JAX (numerics tests check convergence orders in float64)."""
  with jax.enable_x64(True):
    yield

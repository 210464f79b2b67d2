"""Test setup: 8 virtual CPU devices (set before JAX is imported), strict rank promotion
(as diffrax's own tests: an implicit broadcast of arrays of different ranks raises), and
a float64 fixture."""

import os

# 8 virtual CPU devices for the data-parallel tests. XLA's CPU compile time dominates this
# suite (two thirds of the config and notebook tests): backend optimization level 0 halves
# it, and the classic (non-MLIR) fusion emitters halve it again; numbers stay within the
# tests' tolerances (WORKSPACE.md §9). Subprocesses the tests spawn inherit the flags.
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 "
    "--xla_cpu_use_fusion_emitters=false")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
  """Runs the test with 64-bit JAX (numerics tests check convergence orders in float64)."""
  with jax.enable_x64(True):
    yield

"""NICE, RealNVP and Glow: inverses, log-dets, normalisation, bits/dim and bad input."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genode.flows import FLOWS, flow_log_prob_of_levels, get_flow, get_prior
from genode.bits import bits_per_dim, dequantize
from tests.test_flows_layers import jitted

IMAGE = (4, 4, 1)

ARCHITECTURES = {
    "nice_image": ("nice", dict(data_shape=IMAGE, hidden=8, num_hidden_layers=2)),
    "nice_vector": ("nice", dict(data_shape=(2,), hidden=8, num_hidden_layers=2)),
    "realnvp_image": ("realnvp", dict(data_shape=IMAGE, hidden=4)),
    "realnvp_image_spline": ("realnvp", dict(data_shape=IMAGE, hidden=4, coupling="spline",
                                             num_bins=3, num_scales=1)),
    "nice_image_logit": ("nice", dict(data_shape=IMAGE, hidden=8, num_hidden_layers=1,
                                      logit_alpha=0.05)),
    "realnvp_vector": ("realnvp", dict(data_shape=(2,), hidden=8, num_vector_couplings=4)),
    "glow_image": ("glow", dict(data_shape=IMAGE, hidden=4, num_levels=2, num_steps=2)),
    "glow_image_logit": ("glow", dict(data_shape=IMAGE, hidden=4, num_levels=1, num_steps=1,
                                      logit_alpha=0.05)),
    "glow_image_plain_additive": ("glow", dict(data_shape=IMAGE, hidden=4, num_levels=1,
                                               num_steps=2, lu=False, coupling="additive")),
    "glow_image_spline": ("glow", dict(data_shape=IMAGE, hidden=4, num_levels=1,
                                       num_steps=2, coupling="spline", num_bins=3)),
    "glow_vector": ("glow", dict(data_shape=(2,), hidden=8, num_levels=1, num_steps=3)),
}


def perturbed(params, key, scale=0.2):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(treedef, [p + scale * jax.random.normal(k, p.shape, p.dtype)
                                      for p, k in zip(leaves, keys)])


def make_flow_and_params(case, dtype, key=jax.random.key(0), noise=0.2):
  name, fields = ARCHITECTURES[case]
  flow = get_flow(name, **fields)
  k_x, k_init, k_noise = jax.random.split(key, 3)
  x = jax.random.uniform(k_x, (3,) + fields["data_shape"], dtype, minval=-0.95, maxval=0.95)
  params = flow.init(k_init, x, method="log_prob")
  return flow, perturbed(params, k_noise, noise), x


@pytest.mark.parametrize("case", sorted(ARCHITECTURES))
def test_flow_inverse_and_log_det_float64(x64, case):
  flow, params, x = make_flow_and_params(case, jnp.float64)
  forward, inverse = jitted(flow, "forward"), jitted(flow, "inverse")
  z, log_det = forward(params, x)
  assert z.shape == (3, math.prod(x.shape[1:])) and log_det.shape == (3,)
  np.testing.assert_allclose(inverse(params, z), x, atol=1e-9, rtol=0)
  inverse_log_det = jitted(flow, None, inverse=True)(params, z)[1]
  np.testing.assert_allclose(inverse_log_det, -log_det, atol=1e-9, rtol=0)

  def forward_one(sample):
    return flow.apply(params, sample.reshape((1,) + x.shape[1:]), method="forward")[0][0]

  expected = jax.jit(jax.vmap(
      lambda s: jnp.linalg.slogdet(jax.jacfwd(forward_one)(s.reshape(-1)))[1]))(
          x.reshape(3, -1))
  np.testing.assert_allclose(log_det, expected, atol=1e-8, rtol=1e-9)
  # log p(x) = log p_Z(z) + log|det ∂z/∂x| (the change of variables).
  np.testing.assert_allclose(jitted(flow, "log_prob")(params, x),
                             get_prior(flow.prior).log_prob(z) + log_det, rtol=1e-12)


@pytest.mark.parametrize("case", sorted(ARCHITECTURES))
def test_flow_inverse_float32_and_sample(case):
  # Smaller perturbations than in float64: a random spline can be nearly flat (slope
  # ~1e-3), where the float32 inverse is ill-conditioned rather than wrong.
  flow, params, x = make_flow_and_params(case, jnp.float32, noise=0.05)
  inverse = jitted(flow, "inverse")
  z, _ = jitted(flow, "forward")(params, x)
  np.testing.assert_allclose(inverse(params, z), x, atol=1e-5)
  samples = jax.jit(lambda p, key: flow.apply(p, key, 4, 0.7, method="sample"))(
      params, jax.random.key(5))
  assert samples.shape == (4,) + x.shape[1:] and samples.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(samples)))
  # Temperature 0 is the image of z = 0.
  at_zero = jax.jit(lambda p, key: flow.apply(p, key, 2, 0.0, method="sample"))(
      params, jax.random.key(5))
  np.testing.assert_allclose(at_zero, inverse(params, jnp.zeros((2, z.shape[1]))), atol=1e-6)


@pytest.mark.parametrize("case,half_width", [("realnvp_vector", 12.0), ("glow_vector", 12.0),
                                             ("nice_vector", 30.0)])  # logistic tails
def test_two_dimensional_density_integrates_to_one(x64, case, half_width):
  flow, params, _ = make_flow_and_params(case, jnp.float64, jax.random.key(3))
  n = 1201
  grid = jnp.linspace(-half_width, half_width, n, dtype=jnp.float64)
  points = jnp.stack(jnp.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(-1, 2)
  density = jnp.exp(flow.apply(params, points, method="log_prob")).reshape(n, n)
  cell = (grid[1] - grid[0])**2
  total = float(jnp.sum(density) * cell)
  edge = float(jnp.concatenate([density[0], density[-1], density[:, 0], density[:, -1]]).max())
  assert edge < 1e-6, edge  # the grid covers the mass
  assert abs(total - 1.0) < 1e-2, total


class UniformOnCube(nn.Module):
  """A model uniform on [−1, 1]^d: log p = −d ln 2."""

  @nn.compact
  def log_prob(self, x):
    return jnp.full(x.shape[:1], -x[0].size * math.log(2.0), x.dtype)


def test_uniform_model_gives_exactly_eight_bits_per_dim():
  levels = jax.random.randint(jax.random.key(0), (5, 8, 8, 1), 0, 256).astype(jnp.uint8)
  model = UniformOnCube()
  _, bpd = flow_log_prob_of_levels(model, {}, levels, jax.random.key(1))
  np.testing.assert_allclose(bpd, 8.0, rtol=0, atol=1e-6)


def test_log_prob_of_levels_uses_genode_dequantization():
  flow, params, _ = make_flow_and_params("realnvp_image", jnp.float32)
  levels = jax.random.randint(jax.random.key(0), (3,) + IMAGE, 0, 256).astype(jnp.uint8)
  logp, bpd = flow_log_prob_of_levels(flow, params, levels, jax.random.key(1))
  x = dequantize(jax.random.key(1), levels)
  np.testing.assert_allclose(logp, flow.apply(params, x, method="log_prob"), rtol=1e-6)
  np.testing.assert_allclose(bpd, bits_per_dim(logp, 16), rtol=1e-6)


def test_realnvp_logit_is_in_the_log_density():
  """With and without the logit, log p differs by exactly the logit's log-det."""
  x = jax.random.uniform(jax.random.key(0), (3,) + IMAGE, minval=-0.9, maxval=0.9)
  with_logit = get_flow("realnvp", data_shape=IMAGE, hidden=4, logit_alpha=0.05)
  without = get_flow("realnvp", data_shape=IMAGE, hidden=4, logit_alpha=None)
  params = without.init(jax.random.key(1), x, method="log_prob")
  alpha = 0.05
  q = alpha + (1 - 2 * alpha) * (x + 1) / 2
  y = jnp.log(q / (1 - q))
  logit_log_det = jnp.sum((jnp.log((1 - 2 * alpha) / 2) - jnp.log(q * (1 - q))).reshape(3, -1), -1)
  np.testing.assert_allclose(with_logit.apply(params, x, method="log_prob"),
                             without.apply(params, y, method="log_prob") + logit_log_det,
                             rtol=1e-5)


def test_glow_actnorm_initialises_from_the_batch():
  flow = get_flow("glow", data_shape=(8, 8, 1), hidden=4, num_levels=1, num_steps=1)
  x = 0.3 + 0.2 * jax.random.normal(jax.random.key(0), (16, 8, 8, 1))
  params = flow.init(jax.random.key(1), x, method="log_prob")
  actnorm = params["params"]["level0_step0_actnorm"]
  squeezed = x.reshape(16, 4, 2, 4, 2, 1).transpose(0, 1, 3, 5, 2, 4).reshape(16, 4, 4, 4)
  np.testing.assert_allclose(actnorm["bias"], -jnp.mean(squeezed, axis=(0, 1, 2)), rtol=1e-5)


def test_bad_input_messages():
  with pytest.raises(ValueError, match=r"RealNVP: cannot squeeze an input of shape \(1, 7, 8, 1\)"):
    flow = get_flow("realnvp", data_shape=(7, 8, 1))
    flow.init(jax.random.key(0), jnp.zeros((2, 7, 8, 1)), method="log_prob")
  with pytest.raises(ValueError, match=r"Glow: cannot squeeze an input of shape \(1, 6, 6, 1\) 2"):
    flow = get_flow("glow", data_shape=(6, 6, 1), num_levels=2)
    flow.init(jax.random.key(0), jnp.zeros((2, 6, 6, 1)), method="log_prob")
  with pytest.raises(ValueError, match=r"NICE: expected x of shape \(B, 2\), got \(2, 3\)"):
    flow = get_flow("nice", data_shape=(2,))
    flow.init(jax.random.key(0), jnp.zeros((2, 3)), method="log_prob")
  with pytest.raises(ValueError, match=r"Unknown flow 'maf'; valid flows: \['glow', 'nice', 'realnvp'\]"):
    get_flow("maf", data_shape=(2,))
  with pytest.raises(ValueError, match="Unknown fields"):
    get_flow("nice", data_shape=(2,), num_levels=3)
  assert sorted(FLOWS) == ["glow", "nice", "realnvp"]

"""Bijector layers: exact inverses and log|det J| against slogdet(jacfwd) in float64."""

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genode.flows import (ActNorm, Coupling, Homothety, Invertible1x1Conv,
                          Invertible1x1ConvLU, LogitTransform, Squeeze, checkerboard_mask,
                          make_transform, rational_quadratic_spline, squeeze, unsqueeze)
from genode.flows.conv1x1 import assemble_lu_kernel


def perturbed(params, key, scale=0.3):
  """Params plus N(0, scale²) noise, so zero-initialised layers are not the identity."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(treedef, [p + scale * jax.random.normal(k, p.shape, p.dtype)
                                      for p, k in zip(leaves, keys)])


def jitted(module, method, **options):
  """`module.apply(params, *inputs, method=method, **options)` as one compiled program (run
  op by op, a flow's hundreds of small ops would each compile on their own)."""
  return jax.jit(lambda params, *inputs: module.apply(params, *inputs, method=method,
                                                      **options))


def jacobian_log_det(apply_forward, x):
  """log|det ∂y/∂x| per sample of a per-sample map, by slogdet of the dense Jacobian."""
  def one(sample):
    flat = lambda v: apply_forward(v.reshape((1,) + sample.shape)).reshape(-1)
    return jnp.linalg.slogdet(jax.jacfwd(flat)(sample.reshape(-1)))[1]
  return jax.jit(jax.vmap(one))(x)


def layer_cases():
  image, vector = (3, 4, 4, 2), (3, 6)
  cases = []
  for kind in ("additive", "affine_tanh", "affine_sigmoid", "spline"):
    cases.append((f"coupling_{kind}_alternate",
                  lambda kind=kind: Coupling("alternate", 1, make_transform(kind, num_bins=4),
                                             hidden=8), vector))
    cases.append((f"coupling_{kind}_checkerboard",
                  lambda kind=kind: Coupling("checkerboard", 0,
                                             make_transform(kind, num_bins=4), hidden=4), image))
    cases.append((f"coupling_{kind}_channel",
                  lambda kind=kind: Coupling("channel", 1, make_transform(kind, num_bins=4),
                                             hidden=4), image))
  cases += [
      ("actnorm_image", ActNorm, image), ("actnorm_vector", ActNorm, vector),
      ("conv1x1_image", Invertible1x1Conv, image),
      ("conv1x1_vector", Invertible1x1Conv, vector),
      ("conv1x1_lu_image", lambda: Invertible1x1ConvLU(seed=3), image),
      ("conv1x1_lu_vector", Invertible1x1ConvLU, vector),
      ("homothety", Homothety, image), ("logit", LogitTransform, image),
      ("squeeze", Squeeze, image),
  ]
  return cases


CASES = layer_cases()


def make_input(shape, key, dtype):
  # In (−1, 1), the data range (the logit preprocessing needs it).
  return jax.random.uniform(key, shape, dtype, minval=-0.95, maxval=0.95)


@pytest.mark.parametrize("make_layer,shape", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_layer_inverse_and_log_det_float64(x64, make_layer, shape):
  layer = make_layer()
  x = make_input(shape, jax.random.key(0), jnp.float64)
  params = perturbed(layer.init(jax.random.key(1), x, method="forward"), jax.random.key(2))
  y, log_det = jitted(layer, "forward")(params, x)
  assert y.dtype == jnp.float64 and log_det.shape == (shape[0],)
  x_back, inverse_log_det = jitted(layer, "inverse_and_log_det")(params, y)
  np.testing.assert_allclose(x_back, x, atol=1e-9, rtol=0)  # random splines can be steep
  np.testing.assert_allclose(inverse_log_det, -log_det, atol=1e-10, rtol=0)
  expected = jacobian_log_det(lambda v: layer.apply(params, v, method="forward")[0], x)
  np.testing.assert_allclose(log_det, expected, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("make_layer,shape", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_layer_inverse_float32(make_layer, shape):
  layer = make_layer()
  x = make_input(shape, jax.random.key(0), jnp.float32)
  params = perturbed(layer.init(jax.random.key(1), x, method="forward"), jax.random.key(2))
  y, _ = jitted(layer, "forward")(params, x)
  assert y.dtype == jnp.float32
  np.testing.assert_allclose(jitted(layer, "inverse")(params, y), x, atol=2e-5)


def test_actnorm_data_init_and_restore():
  layer = ActNorm()
  key0, key1 = jax.random.split(jax.random.key(0))
  batch = 3.0 + 2.5 * jax.random.normal(key0, (16, 4, 4, 3)) * jnp.array([[[[1.0, 0.1, 4.0]]]])
  params = layer.init(jax.random.key(1), batch, method="forward")
  y, _ = layer.apply(params, batch, method="forward")
  np.testing.assert_allclose(jnp.mean(y, axis=(0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(jnp.var(y, axis=(0, 1, 2)), 1.0, atol=1e-4)
  # Save / restore: the restored values are parameters, applied as they are on a new batch.
  state = flax.serialization.to_state_dict(params)
  template = jax.tree.map(jnp.zeros_like, params)
  restored = flax.serialization.from_state_dict(template, state)
  jax.tree.map(np.testing.assert_array_equal, restored, params)
  other = -1.0 + 0.5 * jax.random.normal(key1, (8, 4, 4, 3))
  y_other, log_det = layer.apply(restored, other, method="forward")
  bias, log_scale = params["params"]["bias"], params["params"]["log_scale"]
  np.testing.assert_allclose(y_other, (other + bias[None, None, None]) *
                             jnp.exp(log_scale[None, None, None]), rtol=1e-6)
  np.testing.assert_allclose(log_det, 16 * jnp.sum(log_scale), rtol=1e-6)
  assert float(jnp.abs(jnp.mean(y_other, axis=(0, 1, 2))).max()) > 0.5  # not re-initialised


def test_lu_conv_log_det_is_slogdet_of_assembled_kernel(x64):
  layer = Invertible1x1ConvLU(seed=7)
  x = jax.random.normal(jax.random.key(0), (2, 3, 3, 5), jnp.float64)
  params = perturbed(layer.init(jax.random.key(1), x, method="forward"), jax.random.key(2))
  p = params["params"]
  kernel, log_abs_det = assemble_lu_kernel(p["lower"], p["upper"], p["log_s"], seed=7)
  sign, expected = jnp.linalg.slogdet(kernel)
  assert sign != 0
  np.testing.assert_allclose(log_abs_det, expected, atol=1e-12)
  _, log_det = layer.apply(params, x, method="forward")
  np.testing.assert_allclose(log_det, 9 * expected, atol=1e-11)
  np.testing.assert_allclose(layer.apply(params, x, method="forward")[0], x @ kernel,
                             atol=1e-12)


def test_lu_conv_fixed_parts_are_not_parameters():
  layer = Invertible1x1ConvLU(seed=0)
  params = layer.init(jax.random.key(0), jnp.zeros((1, 4)), method="forward")
  assert sorted(params["params"]) == ["log_s", "lower", "upper"]


def test_spline_monotone_inverse_and_tails(x64):
  num_bins, bound = 5, 2.0
  x = jnp.linspace(-3.0, 3.0, 2001, dtype=jnp.float64)
  params = 2.0 * jax.random.normal(jax.random.key(0), (3 * num_bins - 1,), jnp.float64)
  params = jnp.broadcast_to(params, x.shape + params.shape)
  y, log_det = rational_quadratic_spline(x, params, num_bins=num_bins, bound=bound)
  assert bool(jnp.all(jnp.diff(y) > 0))  # strictly increasing
  outside = jnp.abs(x) >= bound
  np.testing.assert_array_equal(y[outside], x[outside])  # linear (identity) tails
  np.testing.assert_array_equal(log_det[outside], 0.0)
  np.testing.assert_allclose(y[jnp.abs(x) == bound], x[jnp.abs(x) == bound])
  x_back, inverse_log_det = rational_quadratic_spline(y, params, num_bins=num_bins,
                                                      bound=bound, inverse=True)
  np.testing.assert_allclose(x_back, x, atol=1e-12)
  np.testing.assert_allclose(inverse_log_det, -log_det, atol=1e-10)
  derivative = jax.vmap(jax.grad(lambda v, p: rational_quadratic_spline(
      v, p, num_bins=num_bins, bound=bound)[0]))(x, params)
  np.testing.assert_allclose(log_det, jnp.log(derivative), atol=1e-10)


def test_spline_zero_params_is_identity():
  x = jnp.linspace(-4.0, 4.0, 101)
  y, log_det = rational_quadratic_spline(x, jnp.zeros((101, 11)), num_bins=4, bound=3.0)
  np.testing.assert_allclose(y, x, atol=1e-5)
  np.testing.assert_allclose(log_det, 0.0, atol=1e-5)


def test_squeeze_round_trip_and_layout():
  x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
  s = squeeze(x)
  assert s.shape == (2, 2, 3, 12)
  # channel 4c + 2a + b holds pixel (2i + a, 2j + b) of channel c.
  np.testing.assert_array_equal(s[1, 1, 2, 4 * 2 + 2 * 1 + 0], x[1, 3, 4, 2])
  np.testing.assert_array_equal(unsqueeze(s), x)


def test_bad_inputs():
  with pytest.raises(ValueError, match=r"Coupling\(mask='checkerboard'\) needs an image input \(B, H, W, C\), got shape \(2, 6\)"):
    layer = Coupling("checkerboard", 0, make_transform("affine_sigmoid"))
    layer.init(jax.random.key(0), jnp.zeros((2, 6)), method="forward")
  with pytest.raises(ValueError, match=r"squeeze: cannot squeeze an input of shape \(1, 5, 4, 1\)"):
    squeeze(jnp.zeros((1, 5, 4, 1)))
  with pytest.raises(ValueError, match=r"checkerboard mask needs an image input.*\(6,\)"):
    checkerboard_mask((6,), 0)
  with pytest.raises(ValueError, match="Unknown coupling transform 'affine'"):
    make_transform("affine")

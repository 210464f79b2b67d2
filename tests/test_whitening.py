"""The data-fitted whitening bijector (genode.whitening) and the cnf family's use of it
(`cnf.whitening`): closed forms, the exact log-det, a zero field = the fitted Gaussian,
statistics fitted to the training examples only, never trained, never refitted on restore."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as scipy_stats

from configs import toy2d_ffjord
from genode import loop
from genode import whitening
from genode import workdir as workdir_lib
from genode.data import uint8_to_float
from genode.experiment import Experiment
from genode.ffjord import CNF
from genode.models import ConcatSquashMLP
from genode.train.checkpoint import Checkpointer

STEP = 2.0 / 256  # one dequantization bin of [−1, 1]


def test_whiten_inverts_and_its_log_det_is_slogdet_of_the_jacobian(x64):
  dim = 4
  key_mean, key_scale, key_x = jax.random.split(jax.random.key(0), 3)
  scale = jnp.tril(jax.random.normal(key_scale, (dim, dim), jnp.float64))
  scale = scale + jnp.diag(jnp.abs(jnp.diagonal(scale)) + 0.3 - jnp.diagonal(scale))
  stats = {"mean": jax.random.normal(key_mean, (dim,), jnp.float64), "scale_tril": scale}
  x = jax.random.normal(key_x, (3, 2, 2, 1), jnp.float64)
  z, log_det = whitening.whiten(stats, x)
  assert z.shape == x.shape
  np.testing.assert_allclose(whitening.unwhiten(stats, z), x, rtol=0, atol=1e-12)
  jac = jax.jacfwd(lambda v: whitening.whiten(stats, v[None])[0][0].ravel())(x[0])
  sign, expected = np.linalg.slogdet(np.asarray(jac).reshape(dim, dim))
  assert sign != 0
  np.testing.assert_allclose(log_det, expected, rtol=1e-12)


@pytest.mark.parametrize("kind", ["full", "diagonal"])
def test_fit_is_the_dequantized_datas_mean_and_covariance(kind):
  """Two pixels equal to each other, half the images at level a, half at b: the uniformly
  dequantized x = 2(k + u)/256 − 1 has mean ((a + b + 1)/2)·2/256 − 1, variance
  (2/256)²((b − a)²/4 + 1/12) and covariance (2/256)²(b − a)²/4 (u independent)."""
  a, b = 3, 200
  levels = np.repeat(np.array([[a, a], [b, b]], np.uint8), 5, axis=0)  # (10, 2)
  fitted = whitening.fit(jnp.asarray(uint8_to_float(levels)), kind, num_levels=256)
  mean = ((a + b + 1) / 2) * STEP - 1
  var, cov = STEP**2 * ((b - a)**2 / 4 + 1 / 12), STEP**2 * (b - a)**2 / 4
  np.testing.assert_allclose(fitted["mean"], [mean, mean], rtol=1e-6)
  scale = np.asarray(fitted["scale_tril"], np.float64)
  expected = np.array([[var, cov], [cov, var]]) if kind == "full" else np.diag([var, var])
  np.testing.assert_allclose(scale @ scale.T, expected, rtol=1e-6)
  assert scale[0, 1] == 0 and (kind == "full") == (scale[1, 0] != 0)
  continuous = whitening.fit(jnp.asarray([[0.0, 1.0], [2.0, 5.0], [1.0, 0.0]]), kind)
  np.testing.assert_allclose(continuous["mean"], [1.0, 2.0], rtol=1e-6)
  scale = np.asarray(continuous["scale_tril"], np.float64)
  expected = np.array([[2 / 3, 4 / 3], [4 / 3, 14 / 3]])  # no dequantization term
  if kind == "diagonal":
    expected = np.diag(np.diag(expected))
  np.testing.assert_allclose(scale @ scale.T, expected, rtol=1e-6)


@pytest.mark.parametrize("kind", ["full", "diagonal"])
def test_a_zero_field_is_the_fitted_gaussian(x64, kind):
  """With f = 0 (the zero-initialized output layer) log p(x) is the Gaussian fitted to the
  training batch, N(μ, Σ) (Σ diagonal for "diagonal"), computed here without genode."""
  rng = np.random.default_rng(0)
  levels = rng.integers(0, 256, (50, 2, 2, 1)).astype(np.uint8)
  levels[:, 1] = levels[:, 0] // 2 + rng.integers(0, 9, (50, 2, 1))  # correlated pixels
  family = CNF(model=ConcatSquashMLP(hidden_dims=(8,), activation="tanh"),
               data_shape=(2, 2, 1), num_levels=256, whitening=kind)
  params = family.init_params(jax.random.key(0), {"x": uint8_to_float(levels)})
  assert set(params) == {"field", "whitening"}
  k = levels.reshape(50, 4).astype(np.float64)
  mean = (k + 0.5).mean(0) * STEP - 1
  cov = np.cov(k.T, bias=True) * STEP**2 + np.eye(4) * STEP**2 / 12
  if kind == "diagonal":
    cov = np.diag(np.diag(cov))
  x = (levels[:7].astype(np.float64) + rng.random((7, 2, 2, 1))) * STEP - 1
  logp, _ = family.log_likelihood(params, jnp.asarray(x), jax.random.key(1))
  np.testing.assert_allclose(
      logp, scipy_stats.multivariate_normal(mean, cov).logpdf(x.reshape(7, 4)), rtol=1e-5)
  samples, info = family.sample(params, jax.random.key(2), 3, solver="euler", steps=2)
  assert samples.shape == (3, 2, 2, 1) and bool(info.finite)


def _whitened_runlocal():
  config = toy2d_ffjord.get_config("checkerboard,runlocal")
  config.cnf.whitening = "full"
  return config


def test_the_statistics_are_the_training_examples_and_survive_training_and_restore(
    tmp_path, monkeypatch):
  """Fitted to `training_examples()` at step 0, never changed by training (the params
  bit-identical; the EMA β·θ + (1 − β)·θ of a constant θ within float32 rounding of it: the
  rounding contracts by β each step, it does not accumulate), and restored from the
  checkpoint: restoring calls no fit."""
  config = _whitened_runlocal()
  config.train.update(num_steps=2, sample_every=0)  # no sample grid: the cost is compiling
  experiment = Experiment.from_config(config)
  expected = whitening.fit(jnp.asarray(experiment.dataset.training_examples()["x"]), "full")
  workdir = str(tmp_path / "run")
  state = loop.train(config, workdir)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params["whitening"]),
               expected)
  ema_close = functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7)
  jax.tree.map(ema_close, jax.device_get(state.ema_params["whitening"]), expected)
  monkeypatch.setattr(whitening, "_fit_numpy", lambda *a: pytest.fail("refitted on restore"))
  restored = workdir_lib.restore_workdir(workdir)
  jax.tree.map(np.testing.assert_array_equal, restored.state.ema_params["whitening"],
               jax.device_get(state.ema_params["whitening"]))
  assert restored.experiment.family.whitening == "full"


def test_image_training_examples_exclude_the_validation_split():
  from genode.data import get_dataset
  dataset = get_dataset("digits", use_labels=False, validation_examples=200)
  fit = dataset.training_examples()["x"]
  train, val = dataset.split("train")["x"], dataset.split("val")["x"]
  assert len(fit) + len(val) == len(train)
  np.testing.assert_array_equal(fit, train[:len(fit)])


def test_bad_whitening_is_one_line():
  with pytest.raises(ValueError, match=r"Unknown whitening 'zca'; valid: \['none', 'diagonal', "):
    dataclasses.replace(CNF(model=ConcatSquashMLP(hidden_dims=(4,)), data_shape=(2,)),
                        whitening="zca")
  config = _whitened_runlocal()
  config.optim.update(optimizer="adamw", weight_decay=1e-4)
  with pytest.raises(ValueError, match="would decay them; use weight_decay=0"):
    Experiment.from_config(config)

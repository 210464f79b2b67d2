"""Reflow and distillation objectives (genode.reflow.objectives)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genode import formulations, gaussians, sampling
from genode.denoiser import precondition, velocity
from genode.losses import denoising_loss
from genode.reflow import objectives
from genode.reflow import rf_time
from genode.reflow.rf_time import UniformTimeSigma, rf_time_sigmas

RF = formulations.RectifiedFlow()


def _network_fn(params, x_in, c_noise, key, class_labels=None):
  """A small nonlinear F(x_in, c_noise) with a dropout-like use of the key."""
  del key
  h = jnp.tanh(x_in @ params["w"] + c_noise[:, None] * params["b"][None])
  if class_labels is not None:
    h = h + class_labels[:, None].astype(h.dtype)
  return h @ params["v"]


def _params(dtype, d=3):
  keys = jax.random.split(jax.random.key(1), 3)
  return {"w": jax.random.normal(keys[0], (d, 8), dtype),
          "b": jax.random.normal(keys[1], (8,), dtype),
          "v": jax.random.normal(keys[2], (8, d), dtype) / 3}


@pytest.mark.parametrize("formulation", [RF, formulations.EDM()], ids=["rf", "edm"])
def test_reflow_loss_with_fresh_noise_is_the_denoising_loss(x64, formulation):
  params = _params(jnp.float64)
  y = jax.random.normal(jax.random.key(2), (16, 3), jnp.float64)
  key = jax.random.key(3)
  loss_key, dropout_key = jax.random.split(key)
  noise = jax.random.normal(jax.random.split(loss_key)[1], y.shape, y.dtype)  # same derivation
  objective = objectives.make_reflow_objective(formulation, _network_fn)
  per_sample, metrics = objective(params, {"x": y, "noise": noise}, key)
  denoiser = objectives.batch_denoiser(formulation, _network_fn, params, {}, dropout_key)
  expected = denoising_loss(formulation, denoiser, y, loss_key)
  assert per_sample.shape == (16,)
  np.testing.assert_array_equal(per_sample, expected)
  np.testing.assert_array_equal(metrics["loss"], jnp.mean(expected))


def test_rf_reflow_loss_is_the_velocity_loss_on_the_coupling(x64):
  """λ‖D − x‖² = ‖v_θ(x_t, t) − (z − x)‖², x_t = (1 − t)·x + t·z (genode's reversed time)."""
  params = _params(jnp.float64)
  keys = jax.random.split(jax.random.key(4), 3)
  x = jax.random.normal(keys[0], (16, 3), jnp.float64)
  z = jax.random.normal(keys[1], (16, 3), jnp.float64)
  sample_sigma = UniformTimeSigma(RF)
  objective = objectives.make_reflow_objective(RF, _network_fn, sample_sigma=sample_sigma)
  per_sample, _ = objective(params, {"x": x, "noise": z}, keys[2])
  loss_key, dropout_key = jax.random.split(keys[2])
  sigma = sample_sigma(jax.random.split(loss_key)[0], (16,))
  t = sigma / (1 + sigma)
  assert np.all((t >= 1e-5) & (t <= 1 - 1e-3))
  denoiser = objectives.batch_denoiser(RF, _network_fn, params, {}, dropout_key)
  xbar = x + sigma[:, None] * z
  v = velocity(denoiser, xbar, sigma)
  np.testing.assert_allclose(per_sample, jnp.mean((v - (z - x)) ** 2, -1), rtol=1e-10)


def test_reflow_objective_passes_labels_and_has_a_gradient():
  params = _params(jnp.float32)
  batch = {"x": jnp.ones((4, 3)), "noise": jnp.zeros((4, 3)), "label": jnp.arange(4)}
  objective = objectives.make_reflow_objective(RF, _network_fn)
  with_labels, _ = objective(params, batch, jax.random.key(0))
  without, _ = objective(params, {k: batch[k] for k in ("x", "noise")}, jax.random.key(0))
  assert not np.allclose(with_labels, without)
  grads = jax.grad(lambda p: jnp.mean(objective(p, batch, jax.random.key(0))[0]))(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def _teacher_one_step_network(gaussian):
  """F such that the RF-preconditioned D(x̄; σ) = flow(x̄, σ, 0): the teacher's jump to 0."""

  def network_fn(params, x_in, c_noise, key):
    del params, key
    sigma = (c_noise / (1 - c_noise))[:, None]  # c_noise = t = σ/(1 + σ)
    c_skip, c_out, c_in, _ = RF.preconditioning(sigma)
    xbar = x_in / c_in
    target = jax.vmap(lambda xi, si: gaussian.flow(xi[None], si[0], 0.0)[0])(xbar, sigma)
    return (target - c_skip * xbar) / c_out

  return network_fn


def test_distillation_loss_is_zero_for_the_teachers_one_step_map(x64):
  gaussian = gaussians.Gaussian.random(jax.random.key(0), 3, jnp.float64)
  z = jax.random.normal(jax.random.key(5), (8, 3), jnp.float64)
  x = gaussian.flow(RF.sigma_max * z, RF.sigma_max, 0.0)  # the teacher's endpoint
  batch = {"x": x, "noise": z}
  network_fn = _teacher_one_step_network(gaussian)
  # a feature distance with its parameters as the frozen argument
  distance = lambda p, a, b: jnp.sum((jnp.sin(p * a) - jnp.sin(p * b)) ** 2, -1)
  objective = objectives.make_distillation_objective(RF, network_fn, feature_distance=distance)
  per_sample, metrics = objective(None, batch, jax.random.key(0), jnp.float64(2.0))
  assert per_sample.shape == (8,)
  np.testing.assert_allclose(per_sample, 0.0, atol=1e-20)
  assert set(metrics) == {"loss", "l2", "feature"}
  with pytest.raises(ValueError, match="1 frozen argument"):
    objective(None, batch, jax.random.key(0))  # the feature parameters are not optional
  # a student that is off by δ pays δ² (L2, mean over pixels) plus the feature term
  shifted = {"x": x + 0.1, "noise": z}
  per_sample, metrics = objectives.make_distillation_objective(RF, network_fn)(
      None, shifted, jax.random.key(0))
  np.testing.assert_allclose(per_sample, 0.01, rtol=1e-9)


def test_pseudo_huber_distillation_is_zero_for_the_teachers_one_step_map(x64):
  """The pseudo-Huber option: 0 at the teacher's one-step map; a student off by δ in each
  of D pixels pays sqrt(D·δ² + c²) − c with the paper's c = 0.00054·√D."""
  gaussian = gaussians.Gaussian.random(jax.random.key(0), 3, jnp.float64)
  z = jax.random.normal(jax.random.key(5), (8, 3), jnp.float64)
  x = gaussian.flow(RF.sigma_max * z, RF.sigma_max, 0.0)
  objective = objectives.make_distillation_objective(
      RF, _teacher_one_step_network(gaussian), pixel_distance="pseudo_huber")
  per_sample, metrics = objective(None, {"x": x, "noise": z}, jax.random.key(0))
  np.testing.assert_allclose(per_sample, 0.0, atol=1e-20)
  assert set(metrics) == {"loss", "l2", "pseudo_huber"}
  per_sample, metrics = objective(None, {"x": x + 0.1, "noise": z}, jax.random.key(0))
  c = 0.00054 * np.sqrt(3)
  np.testing.assert_allclose(per_sample, np.sqrt(3 * 0.01 + c ** 2) - c, rtol=1e-9)
  np.testing.assert_allclose(metrics["l2"], 0.01, rtol=1e-9)
  with pytest.raises(ValueError, match=r"Unknown pixel distance 'l1'; valid: \['l2', "):
    objectives.make_distillation_objective(RF, _network_fn, pixel_distance="l1")


def test_pseudo_huber_closed_form_and_its_two_limits(x64):
  """sqrt(‖r‖² + c²) − c: r = (3, 4), c = 12 gives 13 − 12 = 1 exactly (the norm is over
  all of a sample's dimensions); ‖r‖ ≪ c gives ‖r‖²/(2c), ‖r‖ ≫ c gives ‖r‖ − c."""
  zero = jnp.zeros((1, 2, 1), jnp.float64)
  r = jnp.array([[[3.0], [4.0]]], jnp.float64)
  np.testing.assert_array_equal(objectives.pseudo_huber(12.0)(r, zero), [1.0])
  np.testing.assert_array_equal(objectives.pseudo_huber(12.0)(zero, r), [1.0])
  small, large = 1e-4 * r / 5, 1e4 * r / 5  # ‖r‖ = 1e-4 and 1e4, c = 1
  np.testing.assert_allclose(objectives.pseudo_huber(1.0)(small, zero), 1e-8 / 2, rtol=1e-8)
  np.testing.assert_allclose(objectives.pseudo_huber(1.0)(large, zero), 1e4 - 1, rtol=1e-8)
  assert objectives.pseudo_huber_c((8, 8, 1)) == 0.00054 * 8
  with pytest.raises(ValueError, match="c must be > 0"):
    objectives.pseudo_huber(0.0)


def _image_teacher_network(gaussian, shape):
  """`_teacher_one_step_network` on images (B, *shape): flattened to the Gaussian's dim."""
  flat = _teacher_one_step_network(gaussian)

  def network_fn(params, x_in, c_noise, key):
    return flat(params, x_in.reshape(x_in.shape[0], -1), c_noise, key).reshape(x_in.shape)

  return network_fn


def _feature_params(random_bias: bool = True):
  """The digits loss network's spec and random parameters (flax starts biases at 0;
  `random_bias` draws them too)."""
  from genode.reflow import feature_loss
  spec = feature_loss.loss_spec("digits")
  params = jax.jit(spec.module.init)(jax.random.key(3), jnp.zeros((1, 8, 8, 1)))["params"]
  if random_bias:
    params = jax.tree_util.tree_map_with_path(
        lambda path, v: (0.1 * jax.random.normal(jax.random.key(v.size), v.shape)
                         if path[-1].key == "bias" else v), params)
  return spec, params


def test_feature_distillation_loss_is_zero_for_the_teachers_one_step_map(x64):
  """The LPIPS-style feature option on 8×8 images: 0 for the student that equals the
  teacher's one-step map, > 0 off it; the network's parameters are the frozen argument."""
  from genode.reflow import feature_loss
  spec, params = _feature_params()
  params = jax.tree.map(lambda v: v.astype(jnp.float64), params)
  gaussian = gaussians.Gaussian.random(jax.random.key(0), 64, jnp.float64)
  z = jax.random.normal(jax.random.key(5), (4, 8, 8, 1), jnp.float64)
  x = gaussian.flow(RF.sigma_max * z.reshape(4, 64), RF.sigma_max, 0.0).reshape(z.shape)
  network_fn = _image_teacher_network(gaussian, (8, 8, 1))
  distance = feature_loss.make_feature_distance(spec)
  for pixel_weight in (1.0, 0.0):  # "l2+feature" and "feature"
    objective = objectives.make_distillation_objective(
        RF, network_fn, feature_distance=distance, pixel_weight=pixel_weight)
    per_sample, metrics = objective(None, {"x": x, "noise": z}, jax.random.key(0), params)
    np.testing.assert_allclose(per_sample, 0.0, atol=1e-12)
    target = x + 0.3 * jnp.sin(7 * x)
    per_sample, metrics = objective(None, {"x": target, "noise": z}, jax.random.key(0),
                                    params)
    feature = distance(params, x, target)
    assert np.all(feature > 1e-4), feature
    expected = pixel_weight * jnp.mean((x - target) ** 2, (1, 2, 3)) + feature
    np.testing.assert_allclose(per_sample, expected, rtol=1e-6)
    np.testing.assert_allclose(metrics["feature"], jnp.mean(feature), rtol=1e-6)


def test_feature_distance_is_not_l2_it_ignores_a_brightness_scale():
  """Where the two losses should differ: with zero biases a ReLU CNN is positively
  homogeneous, φ_l(c·x) = c·φ_l(x), and the channel normalisation removes c, so the
  feature distance of x̂ = c·x to x is 0 while L2 is (c − 1)²·mean(x²); an image of
  another digit is far in both."""
  from genode.reflow import feature_loss
  spec, params = _feature_params(random_bias=False)
  distance = jax.jit(feature_loss.make_feature_distance(spec))
  x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1), minval=-1.0, maxval=1.0)
  scaled = 1.7 * x
  np.testing.assert_allclose(distance(params, scaled, x), 0.0, atol=1e-9)
  assert float(jnp.min(jnp.mean((scaled - x) ** 2, (1, 2, 3)))) > 0.1
  other = jnp.roll(x, 1, axis=0)
  assert float(jnp.min(distance(params, other, x))) > 1e-3
  np.testing.assert_allclose(distance(params, other, x), distance(params, x, other), rtol=1e-5)
  # with the network's biases the invariance is gone: the distance sees the parameters
  _, biased = _feature_params()
  assert float(jnp.min(distance(biased, scaled, x))) > 1e-6


def test_feature_params_are_an_argument_of_the_compiled_step():
  """The train step takes the feature network as a frozen argument: other parameters,
  another loss, one compilation; none of them is a constant of the step's jaxpr."""
  import optax
  from genode.reflow import feature_loss
  from genode.train import parallel as parallel_lib
  from genode.train.state import create_train_state
  from genode.train.step import make_train_step
  spec, params = _feature_params()
  student = _params(jnp.float32, d=64)

  def network_fn(p, x_in, c_noise, key):
    return _network_fn(p, x_in.reshape(x_in.shape[0], -1), c_noise, key).reshape(x_in.shape)

  objective = objectives.make_distillation_objective(
      RF, network_fn, feature_distance=feature_loss.make_feature_distance(spec), pixel_weight=0.0)
  optimizer = optax.sgd(0.0)
  state = create_train_state(student, optimizer, jax.random.key(0))
  z = jax.random.normal(jax.random.key(1), (8, 8, 8, 1))
  batch = {"x": jnp.tanh(z), "noise": z}
  step = make_train_step(objective, optimizer, ema_decay=0.5)
  parallel = parallel_lib.DataParallel("single")
  compiled = parallel.compile(step, num_frozen=1)
  jaxpr = jax.make_jaxpr(lambda s, b, f: jax.vmap(step, in_axes=(None, 0, None),
                                                  out_axes=(None, None), axis_name="data")(
                                                      s, b, f))(
      state, parallel.shard_batch(batch), params)
  sizes = {int(np.size(p)) for p in jax.tree.leaves(params)}
  assert not [c for c in jaxpr.consts if np.size(c) in sizes and np.size(c) > 1]
  _, a = compiled(parallel.replicate(state), parallel.shard_batch(batch),
                  parallel.replicate(params))
  _, b = compiled(parallel.replicate(state), parallel.shard_batch(batch),
                  parallel.replicate(jax.tree.map(lambda v: 0.5 * v, params)))
  assert float(a["feature"]) != float(b["feature"])


def test_k_step_euler_endpoint_is_euler_in_rf_time(x64):
  """Euler in σ on x̄ = Euler in genode's RF t on x_t = (1 − t)·x̄ (DESIGN.md §2)."""
  gaussian = gaussians.Gaussian.random(jax.random.key(0), 3, jnp.float64)
  z = jax.random.normal(jax.random.key(6), (8, 3), jnp.float64)
  for k in (1, 3):
    x = objectives.euler_endpoint(gaussian.denoiser, z, k, RF.sigma_max)
    sigmas = rf_time_sigmas(k, RF.sigma_max)
    native, _ = sampling.sample(gaussian.denoiser, RF.sigma_max * z, sigmas, "euler",
                                formulation=RF)
    np.testing.assert_allclose(x, native, rtol=1e-9, atol=1e-9)
  np.testing.assert_allclose(objectives.euler_endpoint(gaussian.denoiser, z, 1, RF.sigma_max),
                             gaussian.denoiser(RF.sigma_max * z, RF.sigma_max), rtol=1e-12)


def test_distillation_k_steps_trains():
  params = _params(jnp.float32)
  z = jax.random.normal(jax.random.key(7), (8, 3))
  batch = {"x": jnp.tanh(z), "noise": z}
  objective = jax.jit(objectives.make_distillation_objective(RF, _network_fn, num_steps=2))
  loss = lambda p: jnp.mean(objective(p, batch, jax.random.key(0))[0])
  value, grads = jax.value_and_grad(loss)(params)
  stepped = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)
  assert loss(stepped) < value
  with pytest.raises(ValueError, match="num_steps"):
    objectives.make_distillation_objective(RF, _network_fn, num_steps=0)
  with pytest.raises(ValueError, match="exactly one"):
    objectives.make_reflow_objective(RF)


def test_objectives_take_a_denoiser_fn(x64):
  """Any denoiser (here the teacher's closed form) through denoiser_fn, same numbers."""
  gaussian = gaussians.Gaussian.random(jax.random.key(0), 3, jnp.float64)
  z = jax.random.normal(jax.random.key(8), (8, 3), jnp.float64)
  batch = {"x": gaussian.flow(RF.sigma_max * z, RF.sigma_max, 0.0), "noise": z}
  denoiser_fn = lambda params, batch, key: gaussian.denoiser
  per_sample, _ = objectives.make_distillation_objective(RF, denoiser_fn=denoiser_fn)(
      None, batch, jax.random.key(0))
  one_step = gaussian.denoiser(RF.sigma_max * z, RF.sigma_max)
  np.testing.assert_allclose(per_sample, jnp.mean((one_step - batch["x"]) ** 2, -1), rtol=1e-9)
  key = jax.random.key(1)
  per_sample, _ = objectives.make_reflow_objective(RF, denoiser_fn=denoiser_fn)(None, batch, key)
  expected = objectives.reflow_denoising_loss(RF, gaussian.denoiser, batch["x"], z,
                                              jax.random.split(key)[0])
  np.testing.assert_array_equal(per_sample, expected)


def test_reflow_loss_vanishes_at_the_ideal_denoiser_of_stored_couplings(tmp_path, x64):
  """Couplings of a linear map, through the store and the data source: the reflow loss of
  their ideal (straight) denoiser is 0, and swapping x and z (a known port bug) is not."""
  from genode.reflow import ideal, store
  from genode.reflow.dataset import Couplings
  coupling = ideal.LinearCoupling.of_gaussian_flow(
      gaussians.Gaussian.random(jax.random.key(0), 3, jnp.float64), RF.sigma_max)
  settings = store.CouplingSettings(num_pairs=64, shard_size=32, batch_size=32, seed=0,
                                    shape=(3,), sigma_max=RF.sigma_max)
  out = str(tmp_path / "c")
  store.write_couplings(out, jax.jit(coupling.pair), settings)
  batch = {k: jnp.asarray(v, jnp.float64)
           for k, v in Couplings(out).train_batch(0, 0, 32).items()}
  sample_sigma = UniformTimeSigma(RF, 0.01, 0.99)
  loss = objectives.reflow_denoising_loss(RF, coupling.denoiser, batch["x"], batch["noise"],
                                          jax.random.key(1), sample_sigma)
  assert float(jnp.max(loss)) < 1e-8, loss
  swapped = objectives.reflow_denoising_loss(RF, coupling.denoiser, batch["noise"], batch["x"],
                                             jax.random.key(1), sample_sigma)
  assert float(jnp.mean(swapped)) > 0.1


@pytest.mark.parametrize("a", [0.5, 4.0, 8.0])
def test_u_shaped_density_is_a_symmetric_density_with_its_closed_form_cdf(a):
  t = np.linspace(0.0, 1.0, 20001)
  p = rf_time.u_shaped_density(t, a)
  cdf = rf_time.u_shaped_cdf(t, a)
  np.testing.assert_allclose(np.trapezoid(p, t), 1.0, rtol=1e-7)
  np.testing.assert_allclose(p, p[::-1], rtol=1e-12)  # p(t) = p(1 − t)
  np.testing.assert_allclose(cdf + cdf[::-1], 1.0, rtol=1e-12)  # F(t) + F(1 − t) = 1
  assert cdf[0] == pytest.approx(0.0, abs=1e-15) and cdf[-1] == pytest.approx(1.0)
  central = (cdf[2:] - cdf[:-2]) / (t[2:] - t[:-2])
  np.testing.assert_allclose(central, p[1:-1], rtol=1e-7)  # F' = p
  assert p[0] > p[10000]  # U-shaped: the ends above the middle


def test_u_shaped_time_sigma_draws_its_density_within_the_dkw_bound():
  """sup |F_n − F| ≤ ε with probability ≥ 1 − 2·exp(−2nε²) (Dvoretzky–Kiefer–Wolfowitz);
  ε at 1 − 1e-6. The draws are σ's: t = σ/(1 + σ) rescaled from [t_min, t_max] to [0, 1]."""
  n, t_min, t_max = 100_000, 0.01, 0.99
  sample_sigma = rf_time.UShapedTimeSigma(RF, 4.0, t_min, t_max)
  sigma = np.asarray(sample_sigma(jax.random.key(0), (n,)), np.float64)
  t = np.sort((sigma / (1 + sigma) - t_min) / (t_max - t_min))
  assert t.min() >= -1e-6 and t.max() <= 1 + 1e-6
  epsilon = np.sqrt(np.log(2 / 1e-6) / (2 * n))
  above = np.arange(1, n + 1) / n - rf_time.u_shaped_cdf(t, 4.0)
  below = rf_time.u_shaped_cdf(t, 4.0) - np.arange(n) / n
  assert max(above.max(), below.max()) < epsilon
  assert np.abs(np.arange(1, n + 1) / n - t).max() > 5 * epsilon  # and U[0, 1] fails it


def test_reflow_time_options_are_checked_at_the_config_layer():
  from configs import digits_reflow
  from genode import families
  config = digits_reflow.make("2rf", runlocal=True, root="/r")
  config.objective.time = "u_shaped"
  family = families.get_family(config, (8, 8, 1), 0)
  assert family.objective_params == (("loss", "pseudo_huber"), ("time", "u_shaped"))
  config.objective.time = "logit_normal"
  with pytest.raises(ValueError, match=r"Unknown objective.time 'logit_normal'; valid: "
                     r"\['uniform', 'u_shaped', 'formulation'\]$"):
    families.get_family(config, (8, 8, 1), 0)
  config.objective.time = "u_shaped"
  for a in (0.0, -4.0, float("nan"), float("inf")):
    config.objective.time_a = a
    with pytest.raises(ValueError, match=r"^objective.time_a must be a finite number > 0, "
                       rf"got {a!r}$"):
      families.get_family(config, (8, 8, 1), 0)


def test_reflow_pseudo_huber_is_that_of_the_velocity_residual(x64):
  """loss="pseudo_huber": sqrt(‖v_θ(x_t, t) − (z − x)‖² + c²) − c per sample, c =
  0.00054·√D (Lee, Lin & Fanti 2024, §4.2), on the σ's and velocity of the L2 test;
  the "l2" metric beside it is the L2 loss, and loss="l2" is bit for bit the default."""
  params = _params(jnp.float64)
  keys = jax.random.split(jax.random.key(4), 3)
  x = jax.random.normal(keys[0], (16, 3), jnp.float64)
  z = jax.random.normal(keys[1], (16, 3), jnp.float64)
  batch = {"x": x, "noise": z}
  sample_sigma = UniformTimeSigma(RF)
  make = lambda **kw: objectives.make_reflow_objective(RF, _network_fn,
                                                       sample_sigma=sample_sigma, **kw)
  default, default_metrics = make()(params, batch, keys[2])
  l2, l2_metrics = make(loss="l2")(params, batch, keys[2])
  np.testing.assert_array_equal(l2, default)
  assert set(default_metrics) == set(l2_metrics) == {"loss"}
  per_sample, metrics = make(loss="pseudo_huber")(params, batch, keys[2])
  loss_key, dropout_key = jax.random.split(keys[2])
  sigma = sample_sigma(jax.random.split(loss_key)[0], (16,))
  denoiser = objectives.batch_denoiser(RF, _network_fn, params, {}, dropout_key)
  residual = velocity(denoiser, x + sigma[:, None] * z, sigma) - (z - x)
  c = 0.00054 * np.sqrt(3)
  np.testing.assert_allclose(per_sample, np.sqrt(np.sum(residual ** 2, -1) + c ** 2) - c,
                             rtol=1e-10)
  assert set(metrics) == {"loss", "l2"}
  np.testing.assert_allclose(metrics["l2"], jnp.mean(default), rtol=1e-12)
  np.testing.assert_allclose(metrics["loss"], jnp.mean(per_sample), rtol=1e-15)


def test_reflow_pseudo_huber_of_a_known_residual_and_its_l2_limit(x64):
  """A denoiser off by δ in each of D = 64 pixels has the RF velocity residual
  (1 + σ)/σ·δ: pseudo-Huber gives exactly sqrt(D·((1 + σ)/σ·δ)² + c²) − c, c = 0.00054·8;
  the ideal denoiser gives 0; for ‖r‖ ≪ c it is L2·D/(2c) (L2 = mean(r²))."""
  shape = (4, 8, 8, 1)
  y = jax.random.normal(jax.random.key(0), shape, jnp.float64)
  z = jax.random.normal(jax.random.key(1), shape, jnp.float64)
  sigma = jnp.array([0.25, 1.0, 3.0, 9.0], jnp.float64)
  sample_sigma = lambda key, batch_shape: sigma
  c = 0.00054 * 8
  for delta in (0.0, 0.3, 1e-7):
    denoiser = lambda xbar, s, delta=delta: y + delta  # D = y + δ at every σ
    loss, l2 = objectives.reflow_terms(RF, denoiser, y, z, jax.random.key(2), sample_sigma,
                                       "pseudo_huber")
    r = (1 + sigma) / sigma * delta
    np.testing.assert_allclose(l2, r ** 2, rtol=1e-8, atol=1e-300)  # y + δ − y rounds
    np.testing.assert_allclose(loss, np.sqrt(64 * r ** 2 + c ** 2) - c, rtol=1e-7, atol=1e-300)
    if delta == 1e-7:  # ‖r‖ ≤ 3e-6 ≪ c: the L2 regime, scaled by D/(2c)
      np.testing.assert_allclose(loss, l2 * 64 / (2 * c), rtol=1e-6)
    default = objectives.reflow_denoising_loss(RF, denoiser, y, z, jax.random.key(2),
                                               sample_sigma)
    np.testing.assert_array_equal(default, objectives.reflow_terms(
        RF, denoiser, y, z, jax.random.key(2), sample_sigma)[0])
    np.testing.assert_allclose(default, r ** 2, rtol=1e-8, atol=1e-300)


def test_reflow_loss_is_checked_at_the_config_layer():
  from configs import digits_reflow
  from genode import families
  config = digits_reflow.make("2rf", runlocal=True, root="/r")
  config.objective.loss = "pseudo_huber"
  family = families.get_family(config, (8, 8, 1), 0)
  assert dict(family.objective_params)["loss"] == "pseudo_huber"
  config.objective.loss = "huber"
  with pytest.raises(ValueError, match=r"^Unknown objective.loss 'huber'; valid: "
                     r"\['l2', 'pseudo_huber'\]$"):
    families.get_family(config, (8, 8, 1), 0)
  with pytest.raises(ValueError, match=r"^Unknown objective.loss 'l1'; valid: "):
    objectives.make_reflow_objective(RF, _network_fn, loss="l1")

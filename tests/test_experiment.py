"""The config layer: every config builds, names resolve once, bad configs fail early."""

import glob
import importlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from genode import sampling
from genode.experiment import Experiment
from genode.formulations import get_formulation

CONFIG_NAMES = sorted(os.path.basename(p)[:-3] for p in glob.glob(
    os.path.join(os.path.dirname(__file__), "..", "configs", "*.py"))
                      if not os.path.basename(p).startswith(("_", "base", "eval")))


def get_config(name, arg=None, tmp_path=None):
  config = importlib.import_module(f"configs.{name}").get_config(arg)
  if "path" in config.data and tmp_path is not None:
    config.data.path = str(tmp_path)  # exists; the files are only read when training
  return config


def test_all_experiments_have_configs():
  expected = {f"{d}_{f}" for d in ("toy2d", "digits") for f in ("edm", "vp", "ve", "rf")}
  expected |= {f"{d}_{f}" for d in ("mnist", "cifar10") for f in ("edm", "rf")}
  expected |= {f"{d}_{f}" for d in ("toy2d", "digits", "mnist", "cifar10")
               for f in ("nice", "realnvp", "glow")}
  assert expected <= set(CONFIG_NAMES)


class _Files:
  """Stands in for a dataset read from files (MNIST, CIFAR-10): only its shape is used."""

  quantization_levels = 256

  def __init__(self, name):
    self.name, self.num_classes = name, 10
    self.shape = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}[name]


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_builds_an_experiment(name, tmp_path):
  config = get_config(name, tmp_path=tmp_path)
  dataset = _Files(config.data.name) if "path" in config.data else None
  # Traces the model's init on the data shape (eval_shape): a size it can't take fails.
  experiment = Experiment.from_config(config, dataset=dataset)
  if "formulation" in config:  # the diffusion family's section
    assert experiment.family.formulation == get_formulation(**config.formulation.to_dict())
  state = experiment.abstract_state()
  assert state.params == jax.tree.map(lambda x: x, state.ema_params)
  leaves = jax.tree.leaves(state.params)
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
  # The docstring carries the launch command (big_vision style).
  module = importlib.import_module(f"configs.{name}")
  assert f"--config=configs/{name}.py" in module.__doc__
  # runlocal shrinks it, and the shrunk one builds too.
  small = get_config(name, "runlocal", tmp_path)
  assert small.train.num_steps < config.train.num_steps
  Experiment.from_config(small, dataset=dataset, validate=False)


def test_published_hyperparameters():
  edm = get_config("cifar10_edm")
  assert (edm.train.batch_size, edm.optim.learning_rate, edm.model.dropout) == (512, 1e-3, 0.13)
  assert edm.train.num_steps * edm.train.batch_size == 200_000_000  # 200 Mimg
  assert edm.optim.warmup_steps * edm.train.batch_size == pytest.approx(10e6, rel=1e-4)
  assert edm.optim.ema_half_life_images == 500_000
  assert edm.formulation.sigma_data == 0.5
  rf = get_config("cifar10_rf")
  assert (rf.train.batch_size, rf.optim.learning_rate, rf.model.dropout) == (128, 2e-4, 0.15)
  beta = 0.5 ** (rf.train.batch_size / rf.optim.ema_half_life_images)
  assert beta == pytest.approx(0.999999, abs=1e-12)  # the repository's EMA rate per step


def test_unknown_names_list_the_valid_ones():
  for section, field, valid in [("formulation", "name", "edm"), ("model", "name", "unet"),
                                ("data", "name", "digits"), ("sampler", "solver", "heun"),
                                ("sampler", "grid", "karras"), ("optim", "optimizer", "adam"),
                                ("optim", "decay", "cosine")]:
    config = get_config("toy2d_edm", "runlocal")
    config[section][field] = "nonexistent"
    with pytest.raises(ValueError, match=valid):
      Experiment.from_config(config, validate=False)
  config = get_config("toy2d_edm", "runlocal")
  config.parallel = "nonexistent"
  with pytest.raises(ValueError, match="shard_map"):
    Experiment.from_config(config, validate=False)
  config = get_config("toy2d_edm", "runlocal")
  config.model.nonexistent_field = 3
  with pytest.raises(ValueError, match="hidden_dims"):
    Experiment.from_config(config, validate=False)


def test_batch_must_split_over_devices():
  config = get_config("toy2d_edm", "runlocal")
  config.train.batch_size = jax.local_device_count() + 1
  with pytest.raises(ValueError, match=f"multiple of {jax.local_device_count()}"):
    Experiment.from_config(config, validate=False)
  config.parallel = "single"  # one device: any batch splits
  Experiment.from_config(config, validate=False)


def test_image_size_the_model_cannot_take():
  config = get_config("digits_edm", "runlocal")
  config.model.channel_mults = (1, 1, 1, 1, 1)  # 8 → 4 → 2 → 1 → 0.5
  with pytest.raises(ValueError, match="cannot pass through"):
    Experiment.from_config(config)


def test_missing_data_path_is_a_clear_error(tmp_path):
  config = get_config("mnist_edm", "runlocal")
  config.data.path = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="nowhere.*--config.data.path"):
    Experiment.from_config(config)


def test_conditioning_needs_labelled_data():
  config = get_config("toy2d_edm", "runlocal")
  config.model.num_classes = 3
  with pytest.raises(ValueError, match="num_classes"):
    Experiment.from_config(config, validate=False)


class _LabelledToy:
  """A stand-in 2-D dataset with 3 classes (only shape and num_classes are used here)."""
  name, shape, num_classes = "labelled_toy", (2,), 3


def test_classifier_free_guidance_is_the_linear_mix():
  config = get_config("toy2d_edm", "runlocal")
  config.model.update(num_classes=3, label_dropout=0.1)
  experiment = Experiment.from_config(config, dataset=_LabelledToy())
  # Random parameters (the zero-initialized output layer would hide the label).
  shapes = experiment.abstract_state().params
  keys = iter(jax.random.split(jax.random.key(1), len(jax.tree.leaves(shapes))))
  params = jax.tree.map(lambda s: 0.3 * jax.random.normal(next(keys), s.shape), shapes)
  x = jax.random.normal(jax.random.key(2), (5, 2))
  sigma = jnp.full((5,), 0.7)
  labels = jnp.array([0, 1, 2, 0, 1])

  @jax.jit
  def denoised(params):
    return [experiment.family.denoiser(params, labels, guidance_scale=w)(x, sigma)
            for w in (0.0, 1.0, 2.5)] + [experiment.family.denoiser(params)(x, sigma)]

  d_0, d_c, d_w, d_u = denoised(params)
  assert not np.allclose(d_u, d_c)
  np.testing.assert_allclose(d_0, d_u, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(d_w, d_u + 2.5 * (d_c - d_u), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="class_labels"):
    experiment.family.denoiser(params, None, guidance_scale=2.0)


def test_sampler_sigmas_follow_the_config():
  config = get_config("toy2d_rf", "runlocal")
  experiment = Experiment.from_config(config, validate=False)
  f = experiment.family.formulation
  np.testing.assert_array_equal(
      experiment.family.sampler_sigmas(),
      sampling.get_sigmas("karras", config.sampler.steps, f.sigma_min, f.sigma_max,
                          formulation=f))
  config.sampler.update(grid="uniform_t", steps=5, sigma_max=10.0)
  sigmas = Experiment.from_config(config, validate=False).family.sampler_sigmas()
  assert sigmas.shape == (6,) and sigmas[-1] == 0  # 5 steps: 5 σ's and the final 0
  np.testing.assert_allclose([sigmas[0], sigmas[-2]], [10.0, f.sigma_min], rtol=1e-5)


def test_base_config_fields():
  config = base.get_base_config()
  for field in ("seed", "parallel", "formulation.name", "model.name", "data.name",
                "optim.optimizer", "optim.learning_rate", "optim.warmup_steps", "optim.decay",
                "optim.grad_clip_norm", "optim.b1", "optim.b2", "optim.eps",
                "optim.weight_decay", "optim.ema_half_life_images", "train.num_steps",
                "train.batch_size", "train.log_every", "train.checkpoint_every",
                "train.sample_every", "train.keep_checkpoints", "sampler.solver",
                "sampler.grid", "sampler.steps", "sampler.sigma_min", "sampler.sigma_max",
                "sampler.num_samples", "sampler.guidance_scale"):
    node = config
    for part in field.split("."):
      node = node[part]


class _SyntheticImages:
  """A dataset read from files (MNIST, CIFAR-10) replaced by noise of its shape."""

  quantization_levels = 256

  def __init__(self, name):
    self.name, self.num_classes = name, 10
    self.shape = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}[name]

  def train_batch(self, seed, step, batch_size, process_index=0, process_count=1):
    rng = np.random.default_rng((seed, step))
    return {"x": rng.uniform(-1, 1, (batch_size,) + self.shape).astype(np.float32),
            "label": rng.integers(0, 10, batch_size).astype(np.int32)}


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIG_NAMES + ["toy2d_ddpm"])
def test_every_runlocal_config_trains_a_step(name, tmp_path):
  """A step through Experiment under every formulation: finite loss, parameters move."""
  if name == "toy2d_ddpm":  # DDPM has no config file of its own: toy2d with its row
    config = get_config("toy2d_edm", "runlocal")
    config.formulation = base.formulation_config("ddpm")
  else:
    config = get_config(name, "runlocal", tmp_path)
  config.parallel = "single"  # the same step; compiles once, for one device
  dataset = _SyntheticImages(config.data.name) if "path" in config.data else None
  experiment = Experiment.from_config(config, dataset=dataset, validate=False)
  state = experiment.init_state()
  parallel = experiment.parallel
  step = parallel.compile(experiment.train_step())
  new, metrics = step(parallel.replicate(state), parallel.shard_batch(experiment.train_batch(0)))
  new = jax.device_get(parallel.unreplicate(new))
  assert np.isfinite(float(metrics["loss"])) and not bool(metrics["nonfinite"])
  moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new.params),
                                                     jax.tree.leaves(state.params))]
  assert any(moved) and int(new.step) == 1

"""The config layer: an experiment config resolved to objects, once, and validated.

`Experiment.from_config(config)` turns names into objects through each kind's table
(`get_family` — which resolves the formulation and model —, `get_dataset`,
`make_optimizer`, `DataParallel`) and checks everything that would otherwise fail after
compilation (unknown names, a batch that does not split over devices × processes, an
image size the model cannot take, a data path that does not exist). Below this module
nothing reads a config.

`for_training=False` builds the same experiment for inference (sampling, evaluation,
coupling generation): the training data files need not exist and the training batch
need not divide this machine's devices. Only the data's shape and class count are used;
a metric that needs the data files says so when it opens them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from genode import data as data_lib
from genode import families
from genode.train import optim as optim_lib
from genode.train import parallel as parallel_lib
from genode.train import state as state_lib
from genode.train import step as step_lib

REQUIRED_SECTIONS = ("seed", "parallel", "data", "optim", "train")
_OPTIM_FIELDS = ("optimizer", "learning_rate", "warmup_steps", "decay", "grad_clip_norm", "b1",
                 "b2", "eps", "weight_decay")


@dataclasses.dataclass(frozen=True, eq=False)
class Experiment:
  """Everything a config names, as objects. Build it with `Experiment.from_config`."""

  config: ml_collections.ConfigDict
  family: Any  # a model family (genode.families), e.g. genode.diffusion.Diffusion
  dataset: Any  # a genode.data dataset
  optimizer: optax.GradientTransformation
  parallel: parallel_lib.DataParallel
  ema_decay: Callable  # β(k), the EMA decay after step k
  process_index: int = 0
  process_count: int = 1

  # -- construction ---------------------------------------------------------
  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, *, dataset=None,
                  validate: bool = True, for_training: bool = True) -> "Experiment":
    """Resolves and validates `config`; ValueError/FileNotFoundError before any compile.

    Args:
      config: an experiment config (see configs/base.py).
      dataset: use this dataset object instead of `config.data` (benchmarks, tests).
      validate: trace the model's init on the data shape (`jax.eval_shape`, no FLOPs)
        so that an image size the model cannot take fails here.
      for_training: False = for inference: skip the checks of the data files and of the
        batch against this machine's devices.
    """
    missing = [k for k in REQUIRED_SECTIONS if k not in config]
    if missing:
      raise ValueError(f"Config lacks {missing}; every experiment config has "
                       f"{REQUIRED_SECTIONS} (and its family's sections)")
    parallel = parallel_lib.DataParallel(config.parallel)
    if dataset is None:
      dataset = _dataset(config.data, check_path=for_training)
    family = families.get_family(config, tuple(dataset.shape), dataset.num_classes,
                                 quantization_levels=getattr(dataset, "quantization_levels", 0))
    process_index, process_count = jax.process_index(), jax.process_count()
    if for_training:
      _check_batch(config.train.batch_size, process_count, parallel.num_local_shards)
      # The sampler of training's sample grids (jit-wrapped, not compiled): a sampler
      # it cannot build (grid "optimized" has no workdir grid yet) fails before step 0.
      family.make_sampler(config.sampler.num_samples)
    _check_classes(family.num_classes, dataset)
    train = config.train
    optimizer = optim_lib.make_optimizer(
        total_steps=train.num_steps, **{k: config.optim[k] for k in _OPTIM_FIELDS})
    ema_decay = optim_lib.ema_decay_schedule(config.optim.ema_half_life_images,
                                             train.batch_size,
                                             config.optim.get("ema_rampup_ratio"))
    experiment = cls(config=config, family=family, dataset=dataset, optimizer=optimizer,
                     parallel=parallel, ema_decay=ema_decay, process_index=process_index,
                     process_count=process_count)
    if validate:
      experiment.abstract_state()
    return experiment

  # -- data and state -------------------------------------------------------
  @property
  def data_shape(self) -> tuple[int, ...]:
    return tuple(self.dataset.shape)

  def train_batch(self, step: int) -> dict:
    """This process's rows of the global batch at `step` (a pure function of seed, step)."""
    return self.dataset.train_batch(self.config.seed, step, self.config.train.batch_size,
                                    self.process_index, self.process_count)

  def init_state(self, seed: int | None = None, batch: dict | None = None
                 ) -> state_lib.TrainState:
    """A fresh TrainState from `seed` (default: the config's seed).

    The family initializes its parameters from `batch` (default: the training batch of
    step 0; Glow's ActNorm, for one, is initialized from data — or, for a family whose
    `init_data` is "training_split", every example training draws from, never the
    validation or test split: the cnf family's whitening statistics) with an "rbg" key
    (XLA's RngBitGenerator: on CPU the initializer compiles ~3× faster than with
    threefry, ≈12 s instead of ≈40 s of CPU for the digits U-Net). The run's base key
    (training noise, dropout) is threefry.
    """
    seed = self.config.seed if seed is None else seed
    if batch is None:
      batch = (self.dataset.training_examples()
               if getattr(self.family, "init_data", "batch") == "training_split"
               else self.train_batch(0))
    params = self.family.init_params(jax.random.key(seed, impl="rbg"), batch)
    return state_lib.create_train_state(params, self.optimizer, jax.random.key(seed))

  def example_batch(self) -> dict:
    """The shapes and dtypes of this process's training batch (no data is read)."""
    rows = self.config.train.batch_size // max(self.process_count, 1)
    batch = {"x": jax.ShapeDtypeStruct((rows,) + self.data_shape, jnp.float32)}
    if self.dataset.num_classes:
      batch["label"] = jax.ShapeDtypeStruct((rows,), jnp.int32)
    return batch

  def abstract_state(self) -> state_lib.TrainState:
    """The TrainState's shapes and dtypes (`jax.eval_shape`, nothing is computed or read;
    cached)."""
    return self._abstract_state

  @functools.cached_property
  def _abstract_state(self) -> state_lib.TrainState:
    return jax.eval_shape(lambda batch: self.init_state(batch=batch), self.example_batch())

  def train_step(self) -> Callable:
    """The per-device `train_step(state, batch, *frozen) -> (state, metrics)` (run it via
    `parallel.compile(..., num_frozen=len(self.frozen_inputs()))`)."""
    return step_lib.make_train_step(self.family.objective(), self.optimizer,
                                    ema_decay=self.ema_decay)

  def frozen_inputs(self) -> tuple:
    """The step's frozen inputs (one copy; `parallel.replicate` them): the family's
    `objective_inputs()` if it has any (a distillation's feature network), else ()."""
    inputs = getattr(self.family, "objective_inputs", None)
    return tuple(inputs()) if inputs is not None else ()

  def describe(self) -> str:
    config = self.config
    return (f"{self.family.describe()} on {config.data.name} "
            f"({config.train.num_steps} steps, batch {config.train.batch_size})")


def _dataset(data_config: ml_collections.ConfigDict, check_path: bool = True):
  params = families.fields_of(data_config)
  path = params.get("path")
  if check_path and path is not None and not os.path.exists(os.path.expanduser(path)):
    raise FileNotFoundError(
        f"data.path {path!r} (dataset {params.get('name')!r}) does not exist; put the "
        f"dataset files there or pass --config.data.path=<folder with the files>")
  dataset = data_lib.get_dataset(**params)
  if check_path:
    dataset.check_files()
  return dataset


def _check_batch(batch_size: int, process_count: int, local_devices: int) -> None:
  per_process, rest = divmod(batch_size, process_count)
  if rest or per_process % local_devices:
    raise ValueError(
        f"train.batch_size {batch_size} does not split over {process_count} process(es) × "
        f"{local_devices} device(s) each; use a multiple of {process_count * local_devices}")


def _check_classes(num_classes: int, dataset) -> None:
  if num_classes and num_classes > getattr(dataset, "num_classes", 0):
    raise ValueError(f"model.num_classes = {num_classes} but dataset "
                     f"{getattr(dataset, 'name', '?')!r} has {dataset.num_classes} classes")

"""Datasets: generated 2-D toys, bundled 8×8 digits, MNIST and CIFAR-10 from local files.

`get_dataset(name, **params)` resolves a name once (table `DATASETS`):

| name | params | example shape | classes | source |
|---|---|---|---|---|
| "toy2d" | distribution, split_size, split_seed | (2,) | 0 | generated (`toy2d`) |
| "digits" | use_labels | (8, 8, 1) | 10 | scikit-learn's bundled `load_digits` |
| "mnist" | path, use_labels | (28, 28, 1) | 10 | the four IDX files (.gz or not) in `path` |
| "cifar10" | path, use_labels | (32, 32, 3) | 10 | `cifar-10-python.tar.gz` or its folder |
| "couplings" | path, expected_shape, teacher_workdir | the teacher's | the teacher's | `genode.reflow.dataset` |

toy2d distributions: moons, 8gaussians, checkerboard, swissroll, pinwheel.
Every dataset has `train_batch(seed, step, batch_size, process_index=0,
process_count=1)` (a pure function of its arguments; see `pipeline`) and
`split("train" | "test")`; images are NHWC float32 in [-1, 1] (8-bit convention, see
`base`). Nothing is downloaded at run time.
"""

from __future__ import annotations

import dataclasses

from genode.data.base import Dataset, ImageDataset, to_uint8, uint8_to_float
from genode.data.cifar10 import CIFAR10
from genode.data.digits import Digits
from genode.data.mnist import MNIST, read_idx
from genode.data.pipeline import batches
from genode.data.toy2d import Toy2D

__all__ = ["Dataset", "ImageDataset", "Toy2D", "Digits", "MNIST", "CIFAR10", "DATASETS",
           "get_dataset", "batches", "read_idx", "to_uint8", "uint8_to_float"]

DATASETS: dict[str, type[Dataset]] = {
    "toy2d": Toy2D, "digits": Digits, "mnist": MNIST, "cifar10": CIFAR10,
}


def _couplings() -> type[Dataset]:
  """Stored (z, x = ODE_teacher(z)) pairs for reflow and distillation, imported when
  asked for (genode.reflow imports this package)."""
  from genode.reflow.dataset import Couplings  # pylint: disable=g-import-not-at-top
  return Couplings


LAZY_DATASETS = {"couplings": _couplings}


def get_dataset(name: str, **params) -> Dataset:
  """The dataset `name` with its parameters; ValueError lists valid names/parameters."""
  if name in LAZY_DATASETS:
    cls = LAZY_DATASETS[name]()
  elif name in DATASETS:
    cls = DATASETS[name]
  else:
    raise ValueError(f"Unknown dataset {name!r}; valid datasets: {sorted(DATASETS)} (and "
                     f"{sorted(LAZY_DATASETS)})")
  valid = sorted(f.name for f in dataclasses.fields(cls))
  unknown = sorted(set(params) - set(valid))
  if unknown:
    raise ValueError(f"Unknown parameters {unknown} for dataset {name!r}; valid "
                     f"parameters: {valid}")
  return cls(**params)

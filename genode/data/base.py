"""The dataset interface, and the shared logic of finite image datasets.

Conventions (every dataset):
* `train_batch(seed, step, batch_size, process_index=0, process_count=1)` returns
  dict(x=float32 (batch_size // process_count, *shape), label=int32 (…,) if labelled),
  a pure function of (seed, step, process_index) (see `pipeline`).
* `split("train" | "val" | "test")` returns the whole split as numpy arrays (for
  evaluation). "val" is a validation split held out of the training data (images:
  `validation_examples` > 0, the last ones of the train split, which training batches
  then never draw; toy2d: fresh samples of their own seed), for checkpoint selection
  by held-out likelihood (`config.train.select_by`); "train" stays the whole training
  file, the reference of the sample-quality metrics.
* Images are NHWC float32 in [-1, 1]: x = u/127.5 − 1 for 8-bit values u ∈ {0, …, 255},
  and `quantization_levels` = 256; `to_uint8(x)` = round((x + 1)·127.5) inverts it
  exactly (for PNGs). Generated 2-D data is continuous: `quantization_levels` = 0.
"""

from __future__ import annotations

import abc
import dataclasses
import functools

import numpy as np

from genode.data import pipeline

SPLITS = ("train", "val", "test")


def check_split(which: str) -> str:
  if which not in SPLITS:
    raise ValueError(f"Unknown split {which!r}; valid splits: {list(SPLITS)}")
  return which


def uint8_to_float(u: np.ndarray) -> np.ndarray:
  """8-bit values {0, …, 255} → float32 in [-1, 1]: x = u/127.5 − 1."""
  return u.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def to_uint8(x) -> np.ndarray:
  """[-1, 1] → {0, …, 255}: round((x + 1)·127.5), clipped; inverts `uint8_to_float`."""
  x = np.asarray(x, dtype=np.float32)
  return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class Dataset(abc.ABC):
  """A dataset: per-example `shape`, `num_classes` (0 = unlabelled), `name`."""

  name = "dataset"

  @property
  @abc.abstractmethod
  def shape(self) -> tuple[int, ...]:
    """Shape of one example: (2,) or (H, W, C)."""

  @property
  def num_classes(self) -> int:
    """Number of classes of `label`; 0 when batches carry no labels."""
    return 0

  @property
  def quantization_levels(self) -> int:
    """Number of discrete values per dimension (256 for 8-bit data; 0 = continuous)."""
    return 0

  def check_files(self) -> None:
    """Raises FileNotFoundError (naming the files and where they go) if the data's files
    are missing; a no-op for data that needs none. Constructing a dataset reads nothing,
    so a trained model can be restored for inference without its data."""

  @abc.abstractmethod
  def train_batch(self, seed: int, step: int, batch_size: int, process_index: int = 0,
                  process_count: int = 1) -> dict[str, np.ndarray]:
    """This process's rows of the global training batch at `step` (see module docstring)."""

  @abc.abstractmethod
  def split(self, which: str) -> dict[str, np.ndarray]:
    """The whole "train" or "test" split: dict(x=float32 (N, *shape)[, label=int32 (N,)])."""

  def training_examples(self) -> dict[str, np.ndarray]:
    """The examples training draws from, as `split` returns them (statistics fitted to the
    training data, e.g. a whitening). Generated data: the fixed "train" split."""
    return self.split("train")


@dataclasses.dataclass(frozen=True)
class ImageDataset(Dataset):
  """A finite labelled set of 8-bit images; subclasses implement `load(which)`.

  The arrays load once per instance (cached) and stay 8-bit; batches are converted
  to float32 in [-1, 1] as they are drawn. `use_labels=False` drops the labels
  (num_classes = 0), for unconditional training.
  """

  use_labels: bool = True
  validation_examples: int = 0

  @property
  def quantization_levels(self) -> int:
    return 256

  @property
  def num_classes(self) -> int:
    return self.classes if self.use_labels else 0

  @property
  @abc.abstractmethod
  def classes(self) -> int:
    """Number of classes in the data (whether or not batches carry them)."""

  @abc.abstractmethod
  def load(self, which: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, H, W, C), labels int (N,)) of a split, read from disk."""

  @functools.cached_property
  def _train(self) -> tuple[np.ndarray, np.ndarray]:
    return self._checked(self.load("train"), "train")

  @functools.cached_property
  def _test(self) -> tuple[np.ndarray, np.ndarray]:
    return self._checked(self.load("test"), "test")

  def _checked(self, arrays, which):
    images, labels = arrays
    if images.dtype != np.uint8 or images.shape[1:] != self.shape:
      raise ValueError(f"{self.name} {which} images: expected uint8 (N, *{self.shape}), got "
                       f"{images.dtype}{images.shape}")
    if labels.shape != images.shape[:1]:
      raise ValueError(f"{self.name} {which}: {len(images)} images but labels of shape "
                       f"{labels.shape}")
    if len(labels) and not 0 <= labels.min() <= labels.max() < self.classes:
      raise ValueError(f"{self.name} {which}: labels outside [0, {self.classes})")
    return images, labels.astype(np.int32)

  def arrays(self, which: str) -> tuple[np.ndarray, np.ndarray]:
    """The cached (images uint8 (N, H, W, C), labels int32 (N,)) of a split ("val": the
    last `validation_examples` of the train split)."""
    which = check_split(which)
    if which == "val":
      images, labels = self._train
      start = self._num_fit()
      return images[start:], labels[start:]
    return self._train if which == "train" else self._test

  def _num_fit(self) -> int:
    """How many train-split images training draws from (the rest is the "val" split)."""
    n = int(self.validation_examples)
    total = len(self._train[0])
    if n == 0:
      return total
    if not 0 < n < total:
      raise ValueError(f"{self.name}: data.validation_examples = {n}, but the train split "
                       f"has {total} images")
    return total - n

  def num_examples(self, which: str = "train") -> int:
    return len(self.arrays(which)[0])

  def to_uint8(self, x) -> np.ndarray:
    """Model-space images in [-1, 1] → uint8 for PNGs (see module docstring)."""
    return to_uint8(x)

  @functools.cached_property
  def _permutation(self):
    """`pipeline.epoch_permutation`, memoized for the last few epochs (a pure cache)."""
    return functools.lru_cache(maxsize=4)(pipeline.epoch_permutation)

  def _batch(self, images, labels, indices) -> dict[str, np.ndarray]:
    batch = {"x": uint8_to_float(images[indices])}
    if self.use_labels:
      batch["label"] = labels[indices]
    return batch

  def train_batch(self, seed, step, batch_size, process_index=0, process_count=1):
    start, stop = pipeline.process_rows(batch_size, process_index, process_count)
    images, labels = self.arrays("train")
    indices = pipeline.example_indices(seed, step, batch_size, self._num_fit(), start, stop,
                                       self._permutation)
    return self._batch(images, labels, indices)

  def training_examples(self):
    """The train split without the "val" images (the ones training batches draw)."""
    images, labels = self.arrays("train")
    return self._batch(images, labels, slice(0, self._num_fit()))

  def split(self, which):
    """The whole split as float32 (CIFAR-10 train: 600 MB; `arrays` gives the uint8)."""
    if check_split(which) == "val" and not self.validation_examples:
      raise ValueError(f"{self.name} has no validation split; set "
                       "data.validation_examples to hold some training images out")
    images, labels = self.arrays(which)
    return self._batch(images, labels, slice(None))

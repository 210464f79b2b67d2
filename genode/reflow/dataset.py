"""The couplings data source: stored pairs (z, x) as a genode dataset, streamed from disk.

`Couplings(path)` reads a directory written by `genode.reflow.store.write_couplings`
through `np.load(..., mmap_mode="r")`: only the rows of a batch are read, so memory is
bounded in N. `train_batch(seed, k, b)` returns dict(x=(b, *shape), noise=(b, *shape)
[, label=(b,)]): x the teacher's endpoint (the data y of the reflow loss), noise the
paired z. Rows follow `genode.data.pipeline`'s stateless convention (row j of step k is
pair π_{seed,e}(i mod N), i = k·b + j, e = ⌊i/N⌋), with π a `FeistelPermutation`
evaluated only at the rows needed: the batch at step k is a pure function of
(seed, k, process), and each step costs O(b), not O(N).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

from genode.data import base, pipeline
from genode.reflow import store
from genode.reflow.permutation import FeistelPermutation


@dataclasses.dataclass(frozen=True)
class Couplings(base.Dataset):
  """Stored couplings at `path`; `expected_shape` and `teacher_workdir` (optional) checked.

  teacher_workdir: the workdir the couplings must come from (a student config's
  `data.teacher_workdir`), compared as an absolute path with the manifest's teacher workdir.
  Raises FileNotFoundError if `path` is not a couplings directory, ValueError if its
  example shape is not `expected_shape`, if it comes from another teacher, or if
  generation has not finished.
  """

  path: str
  expected_shape: tuple[int, ...] | None = None
  teacher_workdir: str | None = None

  name = "couplings"

  def __post_init__(self):
    if self.expected_shape is not None:
      object.__setattr__(self, "expected_shape", tuple(int(d) for d in self.expected_shape))
    shape = self.shape  # reads the manifest: FileNotFoundError here
    if self.expected_shape is not None and tuple(self.expected_shape) != shape:
      raise ValueError(f"Couplings at {self.path!r} have examples of shape {shape}, "
                       f"expected {tuple(self.expected_shape)}.")
    if self.teacher_workdir is not None:
      self.check_teacher(workdir=os.path.abspath(os.path.expanduser(self.teacher_workdir)))
    done = store.completed_shards(self.path, self.settings)
    if len(done) != self.settings.num_shards:
      raise ValueError(f"Couplings at {self.path!r} are incomplete ({len(done)} of "
                       f"{self.settings.num_shards} shards): resume their generation.")

  @functools.cached_property
  def manifest(self) -> dict:
    """The directory's manifest.json (see `genode.reflow.store.manifest`)."""
    return store.read_manifest(self.path)

  @functools.cached_property
  def settings(self) -> store.CouplingSettings:
    values = dict(self.manifest["settings"])
    values["shape"] = tuple(values["shape"])
    return store.CouplingSettings(**values)

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.manifest["settings"]["shape"])

  @property
  def num_classes(self) -> int:
    return int(self.manifest["settings"]["num_classes"])

  @property
  def quantization_levels(self) -> int:
    return int(self.manifest["settings"]["quantization_levels"])

  @property
  def teacher(self) -> dict:
    """The teacher recorded at generation (workdir, step, ...), for checks by the caller."""
    return dict(self.manifest["settings"]["teacher"])

  def check_teacher(self, **expected) -> None:
    """ValueError (one line) unless the recorded teacher has these fields, e.g. workdir=..."""
    teacher = self.teacher
    wrong = [f"{k}: {teacher.get(k)!r} (expected {v!r})" for k, v in sorted(expected.items())
             if teacher.get(k) != v]
    if wrong:
      raise ValueError(f"Couplings at {self.path!r} come from another teacher "
                       f"({'; '.join(wrong)}).")

  def num_examples(self, which: str = "train") -> int:
    base.check_split(which)
    return self.settings.num_pairs

  @functools.cached_property
  def _shards(self) -> list[dict[str, np.ndarray]]:
    """Memory-mapped arrays of every shard (nothing is read until indexed)."""
    names = ("z", "x", "label") if self.num_classes else ("z", "x")
    shards = []
    for i in range(self.settings.num_shards):
      folder = store.shard_dir(self.path, i)
      shards.append({n: np.load(os.path.join(folder, f"{n}.npy"), mmap_mode="r") for n in names})
      if shards[-1]["x"].shape != (self.settings.shard_rows(i),) + self.shape:
        raise ValueError(f"{folder}: x of shape {shards[-1]['x'].shape}, expected "
                         f"{(self.settings.shard_rows(i),) + self.shape}.")
    return shards

  def pairs(self, indices) -> dict[str, np.ndarray]:
    """Pairs by global index (n,) → dict(x, noise[, label]), read row by row from disk."""
    indices = np.asarray(indices, np.int64)
    shard, row = np.divmod(indices, self.settings.shard_size)
    out = {"x": np.empty(indices.shape + self.shape, np.float32),
           "noise": np.empty(indices.shape + self.shape, np.float32)}
    if self.num_classes:
      out["label"] = np.empty(indices.shape, np.int32)
    order = np.lexsort((row, shard))  # one pass, shard by shard, rows ascending
    for group in np.split(order, np.flatnonzero(np.diff(shard[order])) + 1):
      if not group.size:
        continue
      arrays, rows = self._shards[int(shard[group[0]])], row[group]
      out["x"][group] = arrays["x"][rows]
      out["noise"][group] = arrays["z"][rows]
      if self.num_classes:
        out["label"][group] = arrays["label"][rows]
    return out

  def train_batch(self, seed, step, batch_size, process_index=0, process_count=1):
    start, stop = pipeline.process_rows(batch_size, process_index, process_count)
    indices = pipeline.example_indices(seed, step, batch_size, self.settings.num_pairs,
                                       start, stop, FeistelPermutation)
    return self.pairs(indices)

  def split(self, which):
    """Every pair of the "train" split, loaded into memory (O(N): small stores, tests).

    Couplings have no test split: evaluate against the teacher's dataset.
    """
    if base.check_split(which) != "train":
      raise ValueError(f"Couplings have no {which!r} split: evaluate against the teacher's "
                       f"dataset ({self.manifest['settings']['dataset'] or 'see the manifest'}).")
    return self.pairs(np.arange(self.settings.num_pairs))

  def to_uint8(self, x) -> np.ndarray:
    """[-1, 1] → uint8 for PNGs, for couplings of 8-bit image data."""
    if self.quantization_levels != 256:
      raise ValueError("to_uint8 is defined for couplings of 8-bit images only "
                       f"(quantization_levels = {self.quantization_levels}).")
    return base.to_uint8(x)

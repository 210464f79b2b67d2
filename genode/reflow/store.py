"""The on-disk coupling store: pairs (z, x = ODE_teacher(z)) written in resumable shards.

Reflow and distillation (Liu, Gong & Liu 2022, §2.3 and eq. 1) train on the coupling
(Z₀, Z₁) = (z, x) of a teacher: z ~ N(0, I), x the end of the teacher's probability-flow
ODE started from z. Conventions (genode's `sampling.sample`, s = 1 coordinates):

* `z` is the standard normal noise n; the teacher starts at x̄ = σ_max·n at σ = σ_max
  (genode's rectified-flow row: σ_max = 999 is t = 0.999, where the native state is
  x_t = (1 − t)·x̄ = t·n, t = 0 data, t = 1 noise);
* `x` is the teacher's state at σ = 0 (the sampler's grid ends at 0).

Layout of a couplings directory:

    <out>/manifest.json           settings, genode version, progress (see `manifest`)
    <out>/shard_00000/z.npy       float32 (m, *shape): n
    <out>/shard_00000/x.npy       float32 (m, *shape): the teacher's x at σ = 0
    <out>/shard_00000/label.npy   int32 (m,): class labels, only when num_classes > 0
    <out>/shard_00000/nfe.npy     int32 (shard_size / batch_size,): NFE of each sampler call
    <out>/shard_00000/settings.sha256  the fingerprint of the settings that made it

m = shard_size except for the last shard (computed in full, stored in part). Every shard is written to
`shard_<i>.tmp/` and renamed into place, so a shard directory exists only when complete;
it counts as done only if its fingerprint matches the manifest's settings (a shard left
by other settings is stale, never reused).
The inputs of shard i are a pure function of (seed, i) (`shard_inputs`), and shard i is
computed as the same `shard_size / batch_size` sampler calls on the same rows, so a killed
run resumed at its first missing shard writes exactly the pairs of an uninterrupted run,
even with adaptive solvers, whose step sizes are shared by the rows of a batch. Process p
of P writes the shards i ≡ p (mod P); the shard contents do not depend on P.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import shutil
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

FORMAT = "genode.couplings/1"
MANIFEST = "manifest.json"

# teacher_sample(z[, label]) -> x, or (x, info) with info.nfe (a `SampleInfo`) or an NFE.
TeacherSample = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class CouplingSettings:
  """Everything that decides the pairs; a resumed run must repeat it exactly.

  num_pairs: N; shard_size: pairs per shard (a multiple of batch_size); batch_size: rows
  per sampler call; seed: of the noise; shape: of one example; num_classes: > 0 draws
  labels uniformly and passes them to the teacher; sigma_max: the teacher's start
  x̄ = σ_max·z; teacher: e.g. dict(workdir=..., step=..., params="ema",
  formulation=...); sampler: e.g. dict(solver="tsit5", grid=..., rtol=1e-5, ...);
  dataset: the teacher's data (its `quantization_levels` says how to decode x).
  """

  num_pairs: int
  shard_size: int
  batch_size: int
  seed: int
  shape: tuple[int, ...]
  sigma_max: float
  num_classes: int = 0
  quantization_levels: int = 0
  teacher: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  sampler: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  dataset: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.num_pairs < 1 or self.batch_size < 1 or self.shard_size < 1:
      raise ValueError(f"num_pairs, shard_size and batch_size must be ≥ 1, got "
                       f"{self.num_pairs}, {self.shard_size}, {self.batch_size}")
    if self.shard_size % self.batch_size:
      raise ValueError(f"shard_size {self.shard_size} is not a multiple of batch_size "
                       f"{self.batch_size}")
    if self.seed < 0:
      raise ValueError(f"seed must be ≥ 0, got {self.seed}")
    object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

  @property
  def num_shards(self) -> int:
    return math.ceil(self.num_pairs / self.shard_size)

  def shard_rows(self, shard: int) -> int:
    """Pairs stored in `shard`: shard_size, or what is left for the last one."""
    return min(self.shard_size, self.num_pairs - shard * self.shard_size)

  def to_json(self) -> dict:
    """The settings as plain JSON values (tuples become lists), as stored in the manifest."""
    return json.loads(json.dumps(dataclasses.asdict(self)))

  @property
  def fingerprint(self) -> str:
    """sha256 of the settings' canonical JSON, stamped into every shard."""
    return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()


def shard_inputs(settings: CouplingSettings, shard: int) -> tuple[np.ndarray, np.ndarray | None]:
  """(z float32 (shard_size, *shape), labels int32 (shard_size,) or None) of `shard`.

  A pure function of (seed, shard): key = fold_in(key(seed), shard), split into the noise
  and label keys. Always shard_size rows (the last shard stores only the first
  `shard_rows`), so shard i's pairs do not depend on N.
  """
  key = jax.random.fold_in(jax.random.key(settings.seed), shard)
  noise_key, label_key = jax.random.split(key)
  rows = (settings.shard_size,)
  z = np.asarray(jax.random.normal(noise_key, rows + settings.shape, jnp.float32))
  if settings.num_classes <= 0:
    return z, None
  labels = jax.random.randint(label_key, rows, 0, settings.num_classes, jnp.int32)
  return z, np.asarray(labels)


def genode_version() -> str:
  import genode  # the package itself: `genode.__version__`, else its metadata
  version = getattr(genode, "__version__", None)
  if version is None:
    from importlib import metadata
    version = metadata.version("genode")
  return str(version)


def shard_dir(out: str, shard: int) -> str:
  return os.path.join(out, f"shard_{shard:05d}")


FINGERPRINT = "settings.sha256"


def _shard_fingerprint(out: str, shard: int) -> str | None:
  try:
    with open(os.path.join(shard_dir(out, shard), FINGERPRINT)) as f:
      return f.read().strip()
  except FileNotFoundError:
    return None


def completed_shards(out: str, settings: CouplingSettings) -> list[int]:
  """Shards written (renamed into place only when complete) with these settings."""
  fingerprint = settings.fingerprint
  return [i for i in range(settings.num_shards) if _shard_fingerprint(out, i) == fingerprint]


def read_manifest(out: str) -> dict:
  """The manifest of a couplings directory; FileNotFoundError (one line) if there is none."""
  if not os.path.isdir(out):
    raise FileNotFoundError(f"Couplings directory {out!r} does not exist: generate it "
                            f"first (launch.reflow couple --out={out}).")
  path = os.path.join(out, MANIFEST)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{out!r} has no {MANIFEST}: it is not a couplings directory.")
  with open(path) as f:
    manifest = json.load(f)
  if manifest.get("format") != FORMAT:
    raise ValueError(f"{path} has format {manifest.get('format')!r}, expected {FORMAT!r}.")
  return manifest


def _write_json_atomically(path: str, value: dict, suffix: str) -> None:
  tmp = f"{path}.tmp{suffix}"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def manifest(out: str, settings: CouplingSettings, created: str | None = None) -> dict:
  """The manifest for the directory's present state.

  Fields: format, genode_version, created/updated (UTC ISO), settings
  (`CouplingSettings.to_json`), num_shards, shards_completed (sorted indices),
  num_pairs_completed, complete, nfe_per_batch (min/mean/max over the completed shards'
  sampler calls, or null).
  """
  done = completed_shards(out, settings)
  nfe = [np.load(os.path.join(shard_dir(out, i), "nfe.npy")) for i in done]
  nfe = np.concatenate(nfe) if nfe else np.zeros((0,), np.int32)
  now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  return {
      "format": FORMAT,
      "genode_version": genode_version(),
      "created": created or now,
      "updated": now,
      "settings": settings.to_json(),
      "num_shards": settings.num_shards,
      "shards_completed": done,
      "num_pairs_completed": int(sum(settings.shard_rows(i) for i in done)),
      "complete": len(done) == settings.num_shards,
      "nfe_per_batch": (None if not nfe.size else
                        {"min": int(nfe.min()), "mean": float(nfe.mean()), "max": int(nfe.max())}),
  }


def _differences(old: Mapping, new: Mapping) -> list[str]:
  keys = sorted(set(old) | set(new))
  return [f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def _prepare(out: str, settings: CouplingSettings, process_index: int, process_count: int,
             overwrite: bool) -> str | None:
  """Checks a resumed directory's settings (before changing anything); returns `created`."""
  path = os.path.join(out, MANIFEST)
  if not os.path.isfile(path):
    return None
  old = read_manifest(out)
  diffs = _differences(old["settings"], settings.to_json())
  if not diffs:
    return old.get("created")
  if not overwrite:
    raise ValueError(f"{out!r} holds couplings made with other settings ({'; '.join(diffs)}): "
                     "pass overwrite=True (--overwrite) to replace them.")
  logging.warning("Overwriting the couplings in %s (%s).", out, "; ".join(diffs))
  _remove_stale_shards(out, settings)
  return None


def _remove_stale_shards(out: str, settings: CouplingSettings) -> None:
  """Deletes every shard made with other settings (any process's: they are never reused)."""
  fingerprint = settings.fingerprint
  for name in sorted(os.listdir(out)):
    if name.startswith("shard_") and not name.endswith(".tmp"):
      try:
        shard = int(name[len("shard_"):])
      except ValueError:
        continue
      if _shard_fingerprint(out, shard) != fingerprint:
        shutil.rmtree(os.path.join(out, name), ignore_errors=True)


def _teacher_batch(teacher_sample: TeacherSample, z, labels):
  """Dispatches one sampler call; returns (x, nfe) as (possibly unfinished) device arrays."""
  result = teacher_sample(z) if labels is None else teacher_sample(z, labels)
  if isinstance(result, tuple):
    x, info = result
    nfe = getattr(info, "nfe", info)
  else:
    x, nfe = result, -1
  return x, nfe


def _generate_shard(teacher_sample, settings: CouplingSettings, shard: int) -> dict:
  """The arrays of one shard: one sampler call per batch, all dispatched, then gathered."""
  z, labels = shard_inputs(settings, shard)
  b = settings.batch_size
  calls = [_teacher_batch(teacher_sample, z[i:i + b], None if labels is None else labels[i:i + b])
           for i in range(0, settings.shard_size, b)]
  x = np.concatenate([np.asarray(x, np.float32) for x, _ in calls])
  if x.shape != z.shape:
    raise ValueError(f"teacher_sample returned x of shape {x.shape[1:]} per batch of "
                     f"{b}, expected {z.shape[1:]}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"The teacher's sampler produced non-finite x in shard {shard}: nothing "
                     "was written for it (check the teacher and the sampler settings).")
  rows = settings.shard_rows(shard)
  arrays = {"z": z[:rows], "x": x[:rows],
            "nfe": np.asarray([int(np.asarray(n)) for _, n in calls], np.int32)}
  if labels is not None:
    arrays["label"] = labels[:rows]
  return arrays


def _save_shard(out: str, shard: int, arrays: Mapping[str, np.ndarray],
                fingerprint: str) -> None:
  """Writes `shard_<i>.tmp/` and renames it to `shard_<i>/` (atomic on POSIX)."""
  final = shard_dir(out, shard)
  tmp = final + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)  # a killed run's partial shard
  os.makedirs(tmp)
  for name, value in arrays.items():
    np.save(os.path.join(tmp, f"{name}.npy"), value)
  with open(os.path.join(tmp, FINGERPRINT), "w") as f:
    f.write(fingerprint + "\n")
  shutil.rmtree(final, ignore_errors=True)  # a stale shard of other settings
  os.rename(tmp, final)


@dataclasses.dataclass(frozen=True)
class WriteSummary:
  """What one `write_couplings` call did."""

  shards_written: tuple[int, ...]
  shards_skipped: tuple[int, ...]  # complete already (resumed)
  seconds: float


def write_couplings(out: str, teacher_sample: TeacherSample, settings: CouplingSettings, *,
                    process_index: int = 0, process_count: int = 1,
                    overwrite: bool = False) -> WriteSummary:
  """Writes (or resumes) this process's shards of the couplings in `out`.

  Args:
    out: the couplings directory (created if missing).
    teacher_sample: a jitted `teacher_sample(z) -> x` (or `(z, labels) -> x` when
      num_classes > 0) on (batch_size, *shape) float32 standard normal z, returning the
      teacher's x at σ = 0 (B, *shape) — or `(x, info)` with `info.nfe` (`SampleInfo`);
      see `make_teacher_sample`. Called once per batch: no per-pair host round trips.
    settings: the `CouplingSettings`; resuming with other settings raises ValueError
      unless `overwrite` (which deletes this process's old shards).
    process_index, process_count: process p of P writes shards i ≡ p (mod P).

  Logs pairs/s and an ETA after each shard; updates manifest.json after each shard.
  """
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
  created = _prepare(out, settings, process_index, process_count, overwrite) \
      if os.path.isdir(out) else None
  os.makedirs(out, exist_ok=True)
  suffix = f".{process_index}"
  manifest_path = os.path.join(out, MANIFEST)
  _write_json_atomically(manifest_path, manifest(out, settings, created), suffix)
  created = read_manifest(out)["created"]

  mine = list(range(process_index, settings.num_shards, process_count))
  skipped = sorted(set(mine) & set(completed_shards(out, settings)))
  todo = [i for i in mine if i not in set(skipped)]
  if skipped:
    logging.info("Couplings %s: %d of this process's %d shards already complete; resuming "
                 "at shard %d.", out, len(skipped), len(mine), todo[0] if todo else -1)
  start = time.perf_counter()
  pairs_done = 0
  pairs_todo = sum(settings.shard_rows(i) for i in todo)
  for i in todo:
    _save_shard(out, i, _generate_shard(teacher_sample, settings, i), settings.fingerprint)
    _write_json_atomically(manifest_path, manifest(out, settings, created), suffix)
    pairs_done += settings.shard_rows(i)
    elapsed = time.perf_counter() - start
    rate = pairs_done / max(elapsed, 1e-9)
    logging.info("Couplings shard %d/%d: %d/%d pairs of this process, %.1f pairs/s, ETA %s",
                 i + 1, settings.num_shards, pairs_done, pairs_todo, rate,
                 _duration((pairs_todo - pairs_done) / max(rate, 1e-9)))
  return WriteSummary(tuple(todo), tuple(skipped), time.perf_counter() - start)


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def make_teacher_sample(denoiser, sigmas, solver: str = "tsit5", *, formulation=None,
                        conditional: bool = False,
                        **options) -> Callable[..., tuple[jax.Array, Any]]:
  """A jitted `teacher_sample(z) -> (x, SampleInfo)`: `sample(D, σ_max·z, sigmas, solver)`.

  denoiser: D(x̄; σ); with `conditional`, a function of the labels (B,) returning D
    (e.g. `lambda labels: experiment.denoiser(params, labels)`), and the sampler is
    `teacher_sample(z, labels)`.
  sigmas: the teacher's grid (M,), sigmas[0] = σ_max, ending at 0 (x at σ = 0);
  `formulation` and `**options` go to `genode.sampling.sample` (e.g. rtol=atol=1e-5,
  the paper's RK45 tolerance, with solver="dopri5").
  """
  from genode import sampling  # the ODE backend, through its public API only
  sigmas = np.asarray(sigmas, np.float64)
  if sigmas[-1] != 0:
    raise ValueError(f"The teacher's grid must end at σ = 0 (the data), got {sigmas[-1]}.")

  def run(d, z):
    return sampling.sample(d, jnp.asarray(sigmas[0], z.dtype) * z, sigmas, solver,
                           formulation=formulation, **options)

  if conditional:
    return jax.jit(lambda z, labels: run(denoiser(labels), z))
  return jax.jit(lambda z: run(denoiser, z))

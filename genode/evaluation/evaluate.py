"""Evaluation of a trained workdir: sample quality per sampler setting, and NLL in bits/dim.

`evaluate_workdir(workdir, eval_config, step, params)` restores a checkpoint and, for
every sampler setting of the eval config (fixed-grid solvers × steps, adaptive solvers ×
tolerances; see configs/eval.py), draws samples and writes under
`<workdir>/eval/<step>/` (`<step>-raw/` for the raw parameters):

  <setting>.json     sampler, NFE used, timings, every metric, seed, genode version
  <setting>.png      a sample grid (a scatter plot for 2-D data)
  likelihood.json    NLL of the test split (sampler independent)
  results.md         the Markdown table of all settings
  quality_vs_nfe.png the headline metric against NFE, one line per solver

Metrics (METRICS):
  feature_fd            Fréchet distance of a small classifier's features (digits, MNIST;
                        `feature_net`) between samples and the train split, its floor (test
                        vs train split) and their ratio
  fid                   Inception-v3 FID vs the train split (skipped, with how to get the
                        weights, when the weights file is missing)
  sliced_wasserstein    SW₂ vs fresh samples of the true 2-D distribution
  mmd                   unbiased MMD² (Gaussian kernel, stated bandwidth) vs the same
  true_log_likelihood   mean log p_data(sample) where the toy density is known
  nll                   −log-likelihood of test examples through `genode.likelihood`

Image samples are quantized to 8 bits (as a PNG would store them) before any feature
metric. Everything is a pure function of the eval config's seed: the same seed gives the
same numbers (timings aside). Names are checked before anything is restored or compiled.

Seed noise. A small-sample metric moves between noise draws by more than many of the gaps
it is asked to show (a 297-sample digits FD: about ±20 %). `repeats = R` draws R disjoint
sets of `num_samples` (set r from the sampler batches r·B … (r + 1)·B − 1 of the seed, so
set 0 is exactly what R = 1 draws) and adds, for every headline metric m, `m_repeats`
(one value per set), `m_repeat_mean`, `m_repeat_sd` and `m_pooled` (the metric of all
R·num_samples samples together, against the same references and floor). Every model
evaluated with the same seed sees the same R noise draws, so differences can be paired.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import genode
from genode import bits
from genode import images as images_lib
from genode import workdir as workdir_lib
from genode.evaluation import feature_net as feature_net_lib
from genode.evaluation import frechet
from genode.evaluation import inception
from genode.evaluation import reflow as reflow_eval
from genode.evaluation import report
from genode.evaluation import sample_sets as sample_sets_lib
from genode.evaluation import toy_metrics
from genode.train.checkpoint import CHECKPOINT_DIR, CheckpointError

METRICS = ("feature_fd", "fid", "sliced_wasserstein", "mmd", "true_log_likelihood", "nll")
_TOY_METRICS = ("sliced_wasserstein", "mmd", "true_log_likelihood")
PARAMS = ("ema", "raw")
TRACES = ("auto", "exact", "hutchinson")
REPEATED_METRICS = ("fid", "feature_fd", "feature_fd_ratio", "sliced_wasserstein", "mmd2",
                    "true_log_likelihood")


# ---------------------------------------------------------------------------
# The eval config: settings and checks (before anything runs).
# ---------------------------------------------------------------------------


def check_eval_config(eval_config: ml_collections.ConfigDict, params: str = "ema",
                      family=None) -> list:
  """ValueError naming the valid choices for an unknown metric, params or trace (and, with
  the workdir's `family`, an unknown solver or grid); returns the family's settings."""
  unknown = [m for m in eval_config.metrics if m not in METRICS]
  if unknown:
    raise ValueError(f"Unknown metric(s) {unknown}; valid metrics: {list(METRICS)}")
  if params not in PARAMS:
    raise ValueError(f"Unknown params {params!r}; valid: {list(PARAMS)}")
  if eval_config.nll.trace not in TRACES:
    raise ValueError(f"Unknown nll.trace {eval_config.nll.trace!r}; valid: {list(TRACES)}")
  repeats = eval_config.get("repeats", 1)
  if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
    raise ValueError(f"repeats must be a positive integer (sample sets per setting), got "
                     f"{repeats!r}")
  return [] if family is None else family.sampler_settings(eval_config)


def resolve_metrics(eval_config, dataset) -> tuple[str, ...]:
  """The metrics to compute for `dataset` (the defaults when eval.metrics is empty)."""
  name = getattr(dataset, "name", "?")
  is_toy = len(dataset.shape) == 1
  if not eval_config.metrics:
    if is_toy:
      return ("sliced_wasserstein", "mmd") + (
          ("true_log_likelihood",) if _has_log_prob(dataset) else ()) + ("nll",)
    return ("feature_fd" if name in feature_net_lib.FEATURE_NETS else "fid", "nll")
  metrics = tuple(eval_config.metrics)
  for metric in metrics:
    if metric in _TOY_METRICS and not is_toy:
      raise ValueError(f"Metric {metric!r} is for 2-D toy data; dataset {name!r} has shape "
                       f"{dataset.shape}")
    if metric in ("fid", "feature_fd") and is_toy:
      raise ValueError(f"Metric {metric!r} is for images; dataset {name!r} is 2-D")
    if metric == "feature_fd" and name not in feature_net_lib.FEATURE_NETS:
      raise ValueError(f"Metric 'feature_fd' has feature networks for "
                       f"{sorted(feature_net_lib.FEATURE_NETS)}, not {name!r} (use 'fid')")
    if metric == "true_log_likelihood" and not _has_log_prob(dataset):
      raise ValueError(f"Metric 'true_log_likelihood' needs a known density; toy2d "
                       f"{dataset.distribution!r} has none")
  return metrics


def _has_log_prob(dataset) -> bool:
  try:
    dataset.log_prob(np.zeros((1, 2)))
    return True
  except NotImplementedError:
    return False


# ---------------------------------------------------------------------------
# Workdirs.
# ---------------------------------------------------------------------------


def evaluate_workdir(workdir: str, eval_config: ml_collections.ConfigDict,
                     step: int | None = None, params: str = "ema") -> list[dict]:
  """Evaluates a workdir's checkpoint (newest readable by default); returns the records.

  Raises ValueError for unknown names (before anything is restored), FileNotFoundError /
  `genode.train.checkpoint.CheckpointError` for a missing workdir, no checkpoints, a
  missing step or no readable checkpoint. Only `<workdir>/eval/` is written. Needs
  neither the training data nor the training device count, except for the metrics that
  compare with the data (they are skipped, saying so, when its files are missing).
  """
  check_eval_config(eval_config, params, workdir_lib.open_experiment(workdir).family)
  try:
    restored = workdir_lib.restore_workdir(workdir, step)
  except (FileNotFoundError, CheckpointError):
    raise
  except Exception as e:  # pylint: disable=broad-exception-caught  # orbax's bare errors
    raise CheckpointError(
        f"Checkpoint {step} in {os.path.join(workdir, CHECKPOINT_DIR)} is "
        f"unreadable ({type(e).__name__}: {e}); evaluate another --step, or omit --step for "
        "the newest readable one") from e
  weights = workdir_lib.select_params(restored.state, params)
  name = str(restored.step) if params == "ema" else f"{restored.step}-raw"
  out_dir = os.path.join(workdir, "eval", name)
  family = restored.experiment.family
  settings = stored_grid_settings(workdir, family, family.sampler_settings(eval_config),
                                  restored.step)
  return evaluate_experiment(restored.experiment, weights, eval_config, out_dir,
                             extra=dict(workdir=os.path.abspath(workdir), step=restored.step,
                                        params=params), settings=settings)


def stored_grid_settings(workdir: str, family, settings: list, step: int) -> list:
  """Settings with grid "optimized" given the workdir's stored σ's for their checkpoint
  `step`; those without a stored grid (or fitted to another step) are left out, saying so."""
  from genode import schedule_store  # pylint: disable=g-import-not-at-top
  out = []
  for setting in settings:
    if getattr(setting, "grid", None) != schedule_store.OPTIMIZED or setting.tol is not None:
      out.append(setting)
      continue
    try:
      record = schedule_store.load_grid(workdir, setting.solver, setting.steps,
                                        checkpoint_step=step,
                                        formulation=schedule_store.formulation_record(family))
    except ValueError as e:
      logging.warning("Skipped %s: %s", setting.name, e)
      continue
    out.append(dataclasses.replace(setting, sigmas=tuple(float(x) for x in record["sigmas"])))
  return out


def evaluate_experiment(experiment, weights, eval_config: ml_collections.ConfigDict,
                        out_dir: str, extra: dict | None = None,
                        settings: list | None = None) -> list[dict]:
  """Evaluates `weights` of an `Experiment` with every sampler setting; writes `out_dir`.

  `settings`: the family's for `eval_config` (default), or these (e.g. with stored grids).
  Returns one record per sampler setting, then the likelihood record (if "nll" is asked).
  """
  experiment, couplings = reflow_eval.reference_experiment(experiment)  # the real data
  family, dataset = experiment.family, experiment.dataset
  checked = check_eval_config(eval_config, family=family)
  settings = checked if settings is None else settings
  settings = [s for s in settings if getattr(s, "grid", None) != "optimized"
              or getattr(s, "sigmas", None) is not None]  # stored grids need their workdir
  metrics = resolve_metrics(eval_config, dataset)
  num = _num_samples(eval_config, dataset)
  repeats = int(eval_config.get("repeats", 1))
  base = dict(extra or {}, dataset=getattr(dataset, "name", "?"), seed=int(eval_config.seed),
              genode_version=genode.__version__, num_samples=num)
  if repeats > 1:
    base["repeats"] = repeats
  logging.info("Evaluating %d sampler settings × metrics %s → %s", len(settings), metrics,
               out_dir)
  scorer = _Scorer.build(experiment, eval_config, metrics, num)
  os.makedirs(out_dir, exist_ok=True)
  records = []
  for setting in settings:
    x, run = _draw_samples(family, weights, setting, num, eval_config, repeats)
    record = dict(base, kind="samples", name=setting.name, sampler=setting.describe(), **run)
    record["metrics"] = scorer.repeated(x, num)
    images_lib.save_samples(os.path.join(out_dir, setting.name + ".png"),
                            x[:eval_config.grid_samples], getattr(dataset, "to_uint8", None))
    _write_json(os.path.join(out_dir, setting.name + ".json"), record)
    logging.info("%s: NFE %s, %s", setting.name, run["nfe"], record["metrics"])
    records.append(record)
  if "rf" in eval_config:  # straightness, k-step Euler, the teacher (configs/eval_reflow.py)
    records += reflow_eval.rf_records(experiment, weights, eval_config, out_dir, scorer, base,
                                      _write_json, couplings)
  if "nll" in metrics:
    record = dict(base, kind="likelihood", name="likelihood",
                  **_needs_data("nll", lambda: negative_log_likelihood(
                      experiment, weights, eval_config)))
    record.pop("num_samples")
    _write_json(os.path.join(out_dir, "likelihood.json"), record)
    records.append(record)
  report.write_report(out_dir, records)
  reflow_eval.append_report(out_dir, records)
  return records


def _needs_data(metric: str, compute: Callable[[], dict]) -> dict:
  """`compute()`, or {metric_skipped: why} when the dataset's files are missing."""
  try:
    return compute()
  except FileNotFoundError as e:
    message = f"metric {metric!r} needs the dataset's files: {e}"
    logging.warning("Skipped: %s", message)
    return {f"{metric}_skipped": message}


def _num_samples(eval_config, dataset) -> int:
  if eval_config.num_samples:
    return int(eval_config.num_samples)
  return int(min(len(dataset.split("test")["x"]), eval_config.max_samples))


def _write_json(path, record):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(_plain(record), f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def _plain(value):
  """JSON-able: numpy scalars → Python; non-finite floats → None."""
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, np.bool_):
    return bool(value)
  return value


# ---------------------------------------------------------------------------
# Sampling.
# ---------------------------------------------------------------------------


def _draw_samples(family, weights, setting, num: int, eval_config, repeats: int = 1):
  """`repeats` sets of `num` samples (see `sample_sets_lib.sample_sets`) and the run's costs; a conditional
  model gets labels 0…K−1 cycling."""
  batch = min(int(eval_config.batch_size), num)
  fn, setting_record = family.setting_sampler(setting, batch)
  labels = family.grid_labels(batch)
  start = time.perf_counter()
  compiled = fn.lower(weights, jax.random.key(0), labels).compile()
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  x, infos = sample_sets_lib.sample_sets(lambda key: compiled(weights, key, labels), num, batch, repeats,
                         eval_config.seed)
  sample_s = time.perf_counter() - start
  nfe = [int(info.nfe) for info in infos]
  return x, dict(nfe=float(np.mean(nfe)), nfe_max=int(max(nfe)),
                 finite=all(bool(info.finite) for info in infos),
                 **setting_record, compile_s=compile_s, sample_s=sample_s,
                 samples_per_s=len(x) / max(sample_s, 1e-9))


# ---------------------------------------------------------------------------
# Sample-quality metrics: references are prepared once, then applied to each sample set.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Scorer:
  """samples (N, *shape) → {metric: value}, with reference statistics computed once."""

  functions: list[Callable[[np.ndarray], dict]]

  @classmethod
  def build(cls, experiment, eval_config, metrics, num) -> "_Scorer":
    dataset = experiment.dataset
    functions = []
    if "feature_fd" in metrics:
      functions.append(_skipped_without_data("feature_fd", lambda: _feature_fd_metric(dataset)))
    if "fid" in metrics:
      functions.append(_skipped_without_data(
          "fid", lambda: _fid_metric(dataset, eval_config.inception_weights)))
    toy = [m for m in metrics if m in _TOY_METRICS]
    if toy:
      functions.append(_toy_metric(dataset, toy, eval_config, num))
    return cls(functions)

  def __call__(self, x) -> dict:
    result = {"num_nonfinite_samples": int(np.sum(~np.all(np.isfinite(
        x.reshape(len(x), -1)), axis=1)))}
    for fn in self.functions:
      result.update(fn(x))
    return result

  def repeated(self, x, num: int) -> dict:
    """The metrics of the first `num` samples of `x`; when `x` holds R > 1 sets of `num`,
    also each REPEATED_METRICS entry's per-set values, their mean and sd, and its value on
    all of `x` (module docstring)."""
    first = self(x[:num])
    repeats = len(x) // num
    if repeats == 1:
      return first
    sets = [first] + [self(x[r * num:(r + 1) * num]) for r in range(1, repeats)]
    pooled = self(x)
    for name in REPEATED_METRICS:
      values = [s.get(name) for s in sets]
      if any(not isinstance(v, (int, float, np.floating)) for v in values):
        continue  # absent or skipped
      first[f"{name}_repeats"] = [float(v) for v in values]
      first[f"{name}_repeat_mean"] = float(np.mean(values))
      first[f"{name}_repeat_sd"] = float(np.std(values, ddof=1))
      first[f"{name}_pooled"] = float(pooled[name])
    return first


def _skipped_without_data(metric: str, build: Callable[[], Callable]) -> Callable:
  """The metric `build()` makes, or one that reports why it was skipped (no data files)."""
  result = _needs_data(metric, lambda: {"fn": build()})
  return result["fn"] if "fn" in result else (lambda x: result)


def _as_8bit(dataset, x) -> np.ndarray:
  """Samples as the 8-bit images they would be saved as, back in [−1, 1]."""
  x = np.nan_to_num(np.asarray(x, np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
  return dataset.to_uint8(x).astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def _image_split(dataset, which):
  images, labels = dataset.arrays(which)
  return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0), labels


def _feature_fd_metric(dataset):
  name = dataset.name
  train_x, train_y = _image_split(dataset, "train")
  test_x, test_y = _image_split(dataset, "test")
  spec = feature_net_lib.get_feature_net_spec(name)
  net = feature_net_lib.load_or_train_feature_net(name, spec, train_x, train_y, test_x, test_y)
  train_stats = frechet.feature_stats(net.features(train_x))
  floor = frechet.frechet_distance_from_stats(frechet.feature_stats(net.features(test_x)),
                                              train_stats)

  def metric(x):
    fd = frechet.frechet_distance_from_stats(
        frechet.feature_stats(net.features(_as_8bit(dataset, x))), train_stats)
    return dict(feature_fd=fd, feature_fd_floor=floor, feature_fd_ratio=fd / floor,
                feature_net=str(net.path.name) if net.path else None,
                feature_net_test_accuracy=net.test_accuracy, feature_fd_num_test=len(test_x))

  return metric


def _fid_metric(dataset, weights_path):
  try:
    variables = inception.load_weights(weights_path)
  except FileNotFoundError as e:
    message = str(e)
    logging.warning("FID skipped: %s", message)
    return lambda x: dict(fid=None, fid_skipped=message)
  train_stats = frechet.feature_stats(
      inception.inception_features(variables, _image_split(dataset, "train")[0]))
  return lambda x: dict(fid=frechet.frechet_distance_from_stats(
      frechet.feature_stats(inception.inception_features(variables, _as_8bit(dataset, x))),
      train_stats))


TOY_FLOOR_FOLD = 7920  # the key of the floor's true samples (the reference's is 7919)


def _toy_metric(dataset, metrics, eval_config, num):
  # Fresh true samples, independent of the training batches and of the splits.
  truth = dataset.sample(jax.random.fold_in(jax.random.key(int(eval_config.seed)), 7919), num)
  truth = np.asarray(truth, np.float64)
  bandwidth = float(eval_config.toy.mmd_bandwidth)
  projections = int(eval_config.toy.num_projections)
  # The noise floor of SW₂ at this sample size: another fresh true set against `truth`.
  # Two sample sets of one distribution differ by about this much (10k on 8gaussians:
  # 0.039 ± 0.012 over seeds), so rows closer than that are not distinguishable.
  floor = None
  if "sliced_wasserstein" in metrics:
    other = np.asarray(dataset.sample(
        jax.random.fold_in(jax.random.key(int(eval_config.seed)), TOY_FLOOR_FOLD), num),
        np.float64)
    floor = toy_metrics.sliced_wasserstein(other, truth, num_projections=projections,
                                           seed=int(eval_config.seed))

  def metric(x):
    x = np.asarray(x, np.float64)
    if not np.all(np.isfinite(x)):
      return {m: None for m in metrics}
    out = {}
    if "sliced_wasserstein" in metrics:
      out["sliced_wasserstein"] = toy_metrics.sliced_wasserstein(
          x, truth, num_projections=projections, seed=int(eval_config.seed))
      out["sliced_wasserstein_num_projections"] = projections
      out["sliced_wasserstein_floor"] = floor
    if "mmd" in metrics:
      out["mmd2"] = toy_metrics.mmd_squared(x, truth, bandwidth=bandwidth)
      out["mmd_bandwidth"] = bandwidth
    if "true_log_likelihood" in metrics:
      out["true_log_likelihood"] = float(np.mean(dataset.log_prob(x)))
      out["true_log_likelihood_of_true_samples"] = float(np.mean(dataset.log_prob(truth)))
    return out

  return metric


# ---------------------------------------------------------------------------
# Likelihood.
# ---------------------------------------------------------------------------


def negative_log_likelihood(experiment, weights, eval_config) -> dict:
  """NLL of the first `nll.num_examples` test examples (bits/dim; nats for 2-D data).

  Images are uniformly dequantized 8-bit data (`genode.bits`' convention), each example
  `nll.num_dequantizations` times (draw j of batch i: key fold_in(dq_i, j), draw 0 the
  one of a single-draw evaluation); an example's bits/dim is the mean over its draws and
  the standard error is over examples. The family's `log_likelihood` gives log p: the
  PF-ODE's (trace exact up to `nll.exact_max_dim` dimensions, Hutchinson above, or as
  set) or a flow's exact change of variables. Where the toy density is known, the gap
  E[log p_data(x) − log p_model(x)] over the same test points (a KL estimate, nats) is
  reported beside the true entropy estimate −E log p_data(x).
  """
  cfg, dataset = eval_config.nll, experiment.dataset
  dim = math.prod(dataset.shape)
  trace = cfg.trace if cfg.trace != "auto" else (
      "exact" if dim <= cfg.exact_max_dim else "hutchinson")
  quantized = dataset.quantization_levels > 0
  if quantized:
    levels, labels = dataset.arrays("test")
  else:
    levels, labels = dataset.split("test")["x"], None
  n = min(int(cfg.num_examples), len(levels))
  batch = min(int(cfg.batch_size), n)
  draws = int(cfg.get("num_dequantizations", 1)) if quantized else 1
  if draws < 1:
    raise ValueError(f"nll.num_dequantizations must be >= 1, got {draws}")
  family = experiment.family
  conditional = family.num_classes > 0

  @jax.jit
  def run(params, x, key, labels):
    return family.log_likelihood(params, x, key, class_labels=labels if conditional else None,
                                 trace=trace, num_probes=int(cfg.num_probes), rtol=cfg.rtol,
                                 atol=cfg.atol)

  root = jax.random.fold_in(jax.random.key(int(eval_config.seed)), 104729)
  logps, probe_err, nfe = [], [], []
  start = time.perf_counter()
  for i in range(math.ceil(n / batch)):
    idx = np.arange(i * batch, (i + 1) * batch) % n  # the last batch wraps (one compile)
    dq_key, probe_key = jax.random.split(jax.random.fold_in(root, i))
    keep = min(batch, n - i * batch)
    lab = None if labels is None or not conditional else jnp.asarray(labels[idx])
    per_draw = []
    for j in range(draws):
      if quantized:
        key = dq_key if j == 0 else jax.random.fold_in(dq_key, j)
        x = bits.dequantize(key, levels[idx], num_levels=dataset.quantization_levels)
      else:
        x = jnp.asarray(levels[idx])
      logp, info = run(weights, x.astype(jnp.float32), probe_key, lab)
      per_draw.append(np.asarray(logp)[:keep])
      nfe.append(int(info.nfe))
      if info.stderr is not None:
        probe_err.append(np.asarray(info.stderr)[:keep])
    logps.append(np.stack(per_draw, axis=1))  # (keep, draws)
  logp_draws = np.concatenate(logps).astype(np.float64)
  logp = logp_draws.mean(axis=1)
  if quantized:
    per_draw_bpd = np.asarray(bits.bits_per_dim(
        logp_draws, dim, data_scale=2.0, num_levels=dataset.quantization_levels))
  else:
    per_draw_bpd = -logp_draws / (dim * math.log(2.0))  # continuous data: no dequantization
  per_example = per_draw_bpd.mean(axis=1)
  result = dict(
      nll_bits_per_dim=float(per_example.mean()),
      nll_bits_per_dim_stderr=float(per_example.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
      nll_nats=float(-logp.mean()), num_examples=n, split="test", trace=trace,
      num_probes=int(cfg.num_probes) if trace == "hutchinson" else 0,
      dequantization="uniform" if quantized else None, num_dequantizations=draws,
      rtol=float(cfg.rtol), atol=float(cfg.atol), conditional=conditional,
      nfe=float(np.mean(nfe)), wall_s=time.perf_counter() - start)
  if draws > 1:
    draw_means = per_draw_bpd.mean(axis=0)
    result["nll_bits_per_dim_draw_stderr"] = float(draw_means.std(ddof=1) / math.sqrt(draws))
  if not quantized and _has_log_prob(dataset):
    true_logp = np.asarray(dataset.log_prob(np.asarray(levels[:n])), np.float64)
    gap = true_logp - logp  # −log p_model(x) − (−log p_data(x)), x ~ p_data: KL ≥ 0
    result.update(true_entropy_nats=float(-true_logp.mean()),
                  nll_gap_nats=float(gap.mean()),
                  nll_gap_nats_stderr=float(gap.std(ddof=1) / math.sqrt(n)) if n > 1 else None)
  result.update(family.likelihood_record())  # a family may restate what it computes
  if probe_err:
    result["hutchinson_stderr_nats_mean"] = float(np.concatenate(probe_err).mean())
  return result

"""End-to-end evaluation of a tiny trained workdir, the feature network, and bad input."""

import json
import os
import shutil
import types
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import eval as eval_config_lib
from configs import digits_edm, toy2d_edm
from genode import bits
from genode.evaluation import evaluate, feature_net, report
from genode.experiment import Experiment
from genode.train import checkpoint
from genode import loop

_TIMINGS = ("compile_s", "sample_s", "samples_per_s", "wall_s")


def _eval_config(**overrides):
  config = eval_config_lib.get_config("runlocal")
  config.update(solvers=("euler",), steps=(3,), tolerances=(1e-2,))
  config.nll.num_examples = 4
  config.nll.batch_size = 4
  config.update(overrides)
  return config


def _snapshot(workdir):
  """Every file outside eval/ with its size and modification time."""
  files = {}
  for root, _, names in os.walk(workdir):
    if os.path.relpath(root, workdir).split(os.sep)[0] == "eval":
      continue
    for name in names:
      path = os.path.join(root, name)
      files[path] = (os.path.getsize(path), os.path.getmtime(path))
  return files


def _without_timings(record):
  return {k: v for k, v in record.items() if k not in _TIMINGS}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """toy2d (8 Gaussians, known density) trained for 4 steps; checkpoints at 2 and 4."""
  config = toy2d_edm.get_config("runlocal")
  config.parallel = "single"
  config.data.distribution = "8gaussians"
  path = str(tmp_path_factory.mktemp("toy") / "workdir")
  loop.train(config, path)
  return path


@pytest.fixture(scope="module")
def first_run(workdir):
  before = _snapshot(workdir)
  records = evaluate.evaluate_workdir(workdir, _eval_config())
  return records, before, _snapshot(workdir)


@pytest.mark.slow
def test_evaluate_workdir_writes_records_and_report(workdir, first_run):
  records, before, after = first_run
  assert before == after  # nothing but eval/ was touched
  out = os.path.join(workdir, "eval", "4")
  names = sorted(os.listdir(out))
  assert names == sorted(["euler_karras3.json", "euler_karras3.png", "tsit5_tol0.01.json",
                          "tsit5_tol0.01.png", "likelihood.json", "results.md",
                          "quality_vs_nfe.png"])
  samples = [r for r in records if r["kind"] == "samples"]
  assert [r["name"] for r in samples] == ["euler_karras3", "tsit5_tol0.01"]
  euler = json.load(open(os.path.join(out, "euler_karras3.json")))
  assert euler["nfe"] == 3 and euler["step"] == 4 and euler["params"] == "ema"
  assert euler["sampler"] == dict(solver="euler", grid="karras", steps=3, tol=None)
  assert euler["genode_version"] and euler["seed"] == 0 and euler["num_samples"] == 64
  metrics = euler["metrics"]
  assert set(metrics) >= {"sliced_wasserstein", "mmd2", "mmd_bandwidth", "true_log_likelihood",
                          "true_log_likelihood_of_true_samples"}
  assert metrics["sliced_wasserstein"] > 0 and metrics["mmd_bandwidth"] == 0.5
  assert samples[1]["nfe"] > 3  # the adaptive solver reports what it used
  nll = json.load(open(os.path.join(out, "likelihood.json")))
  assert nll["trace"] == "exact" and nll["num_examples"] == 4 and nll["num_probes"] == 0
  assert np.isfinite(nll["nll_bits_per_dim"]) and nll["nll_bits_per_dim_stderr"] > 0
  # Bits/dim of continuous 2-D data: −log p / (d ln 2).
  assert nll["nll_bits_per_dim"] == pytest.approx(nll["nll_nats"] / (2 * np.log(2)))
  table = open(os.path.join(out, "results.md")).read()
  assert "| euler_karras3 | euler | karras | 3 |" in table and "bits/dim" in table


@pytest.mark.slow
def test_same_seed_same_numbers(workdir, first_run):
  again = evaluate.evaluate_workdir(workdir, _eval_config())
  assert [_without_timings(r) for r in again] == [_without_timings(r) for r in first_run[0]]
  other = evaluate.evaluate_workdir(workdir, _eval_config(seed=1, adaptive_solvers=()),
                                    step=2, params="raw")
  assert os.path.isdir(os.path.join(workdir, "eval", "2-raw"))
  assert other[0]["metrics"]["sliced_wasserstein"] != first_run[0][0]["metrics"][
      "sliced_wasserstein"]


@pytest.mark.slow
def test_bad_workdirs(workdir, tmp_path):
  config = _eval_config(adaptive_solvers=(), metrics=("mmd",))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    evaluate.evaluate_workdir(str(tmp_path / "nowhere"), config)
  empty = tmp_path / "empty"
  empty.mkdir()
  shutil.copy(os.path.join(workdir, "config.json"), empty)
  with pytest.raises(checkpoint.CheckpointError, match="No checkpoints in"):
    evaluate.evaluate_workdir(str(empty), config)
  with pytest.raises(checkpoint.CheckpointError, match=r"step 99 .*available steps: \[2, 4\]"):
    evaluate.evaluate_workdir(workdir, config, step=99)
  # An unreadable newest checkpoint: the newest readable one (2) is evaluated instead.
  broken = tmp_path / "broken"
  shutil.copytree(workdir, broken, ignore=shutil.ignore_patterns("eval"))
  for root, _, names in os.walk(broken / "checkpoints" / "4" / "default"):
    for name in names:
      if name != "commit_success.txt":
        open(os.path.join(root, name), "wb").close()
  with pytest.raises(checkpoint.CheckpointError, match="Checkpoint 4 in .* is unreadable"):
    evaluate.evaluate_workdir(str(broken), config, step=4)
  before = _snapshot(broken)
  records = evaluate.evaluate_workdir(str(broken), config)
  assert records[0]["step"] == 2 and _snapshot(broken) == before
  shutil.rmtree(broken / "checkpoints" / "2")
  with pytest.raises(checkpoint.CheckpointError, match="No readable checkpoint"):
    evaluate.evaluate_workdir(str(broken), config)


def test_unknown_names_fail_before_anything_runs(workdir):
  nowhere = workdir  # a real workdir: nothing may be restored, compiled or written
  before = sorted(os.listdir(os.path.join(workdir, "eval"))) if os.path.isdir(
      os.path.join(workdir, "eval")) else []
  with pytest.raises(ValueError, match=r"Unknown solver 'rk4'.*\['dpmpp_2m'"):
    evaluate.evaluate_workdir(nowhere, _eval_config(solvers=("rk4",)))
  with pytest.raises(ValueError, match=r"Unknown solver 'heun' in eval.adaptive_solvers.*"
                                       r"\['dopri5', 'tsit5'\]"):
    evaluate.evaluate_workdir(nowhere, _eval_config(adaptive_solvers=("heun",)))
  with pytest.raises(ValueError, match=r"Unknown metric\(s\) \['is'\]; valid metrics: "
                                       r"\['feature_fd', 'fid'"):
    evaluate.evaluate_workdir(nowhere, _eval_config(metrics=("is",)))
  with pytest.raises(ValueError, match="Unknown grid 'cosine'"):
    evaluate.evaluate_workdir(nowhere, _eval_config(grid="cosine"))
  with pytest.raises(ValueError, match=r"Unknown params 'best'; valid: \['ema', 'raw'\]"):
    evaluate.evaluate_workdir(nowhere, _eval_config(), params="best")
  after = sorted(os.listdir(os.path.join(workdir, "eval"))) if os.path.isdir(
      os.path.join(workdir, "eval")) else []
  assert after == before


def test_sampler_settings_and_names():
  config = _eval_config(solvers=("euler", "heun"), steps=(4, 18), adaptive_solvers=("tsit5",),
                        tolerances=(1e-3,))
  family = Experiment.from_config(toy2d_edm.get_config("runlocal"), validate=False).family
  names = [s.name for s in family.sampler_settings(config)]
  assert names == ["euler_karras4", "euler_karras18", "heun_karras4", "heun_karras18",
                   "tsit5_tol0.001"]
  assert family.sampler_settings(config)[-1].options == {"rtol": 1e-3, "atol": 1e-3}


@pytest.fixture
def digits_experiment(monkeypatch, tmp_path):
  """An untrained runlocal digits model, a 30-step feature net, the cache in tmp_path."""
  monkeypatch.setenv("GENODE_CACHE", str(tmp_path / "cache"))
  monkeypatch.setitem(feature_net.FEATURE_NETS, "digits",
                      feature_net.FeatureNetSpec(channels=(8, 16), feature_dim=16, train_steps=30))
  config = digits_edm.get_config("runlocal")
  config.parallel = "single"
  experiment = Experiment.from_config(config, validate=False)
  return experiment, experiment.init_state(0).ema_params


@pytest.mark.slow
def test_digits_feature_fd_floor_ratio_and_missing_inception(digits_experiment, tmp_path):
  experiment, params = digits_experiment
  config = _eval_config(num_samples=32, batch_size=32, adaptive_solvers=(),
                        metrics=("feature_fd", "fid"),
                        inception_weights=str(tmp_path / "missing.npz"))
  records = evaluate.evaluate_experiment(experiment, params, config, str(tmp_path / "out"))
  m = records[0]["metrics"]
  assert m["feature_fd_ratio"] == pytest.approx(m["feature_fd"] / m["feature_fd_floor"])
  assert m["feature_fd_num_test"] == 297 and m["feature_fd_floor"] > 0
  assert m["fid"] is None and "convert_inception" in m["fid_skipped"]
  cached = list((tmp_path / "cache" / "feature_nets").iterdir())
  assert [p.name for p in cached] == [m["feature_net"]]
  assert m["feature_net"].startswith("digits-cnn8x16-f16-")
  # The cached network is reused (same features), and reports its accuracy.
  spec = feature_net.get_feature_net_spec("digits")
  net = feature_net.load_or_train_feature_net("digits", spec, None, None, None, None)
  assert net.test_accuracy == pytest.approx(m["feature_net_test_accuracy"])
  assert report.headline_metric(records) == "feature_fd"


def test_feature_net_training_is_deterministic_and_learns():
  from sklearn.datasets import load_digits
  digits = load_digits()
  x = (digits.images[..., None] / 8.0 - 1.0).astype(np.float32)
  spec = feature_net.FeatureNetSpec(channels=(8, 16), feature_dim=16, train_steps=60)
  a = feature_net.train_feature_net(spec, x[:1500], digits.target[:1500], x[1500:],
                                    digits.target[1500:])
  b = feature_net.train_feature_net(spec, x[:1500], digits.target[:1500], x[1500:],
                                    digits.target[1500:])
  np.testing.assert_array_equal(a.features(x[:5]), b.features(x[:5]))
  assert a.features(x[:5]).shape == (5, 16)
  assert a.test_accuracy > 0.5  # 10 classes: chance is 0.1
  with pytest.raises(ValueError, match=r"No feature network for dataset 'cifar10'.*\['digits', "
                                       r"'mnist'\]"):
    feature_net.get_feature_net_spec("cifar10")


class _Info(typing.NamedTuple):
  nfe: jax.Array
  stderr: jax.Array | None


class _UniformFamily:
  """The density uniform on [−1, 1]^d: log p = −d·ln 2. Records what it was given."""

  num_classes = 0

  def __init__(self):
    self.seen = []

  def log_likelihood(self, params, x, key, *, class_labels=None, trace="exact",
                     num_probes=1, rtol=1e-5, atol=1e-5):
    del params, key, class_labels, rtol, atol
    self.seen.append((trace, num_probes))
    dim = np.prod(x.shape[1:])
    info = _Info(nfe=jnp.int32(7), stderr=None)
    inside = jnp.all((x >= -1) & (x < 1), axis=tuple(range(1, x.ndim)))
    return jnp.where(inside, -dim * np.log(2.0), -jnp.inf) + 0 * jnp.sum(x), info

  def likelihood_record(self):
    return {}


class _Levels:
  """8-bit images of a given shape whose levels are known (to check the dequantization)."""

  name, quantization_levels = "levels", 256

  def __init__(self, shape):
    self.shape = shape
    self.images = np.random.default_rng(0).integers(0, 256, (6,) + shape).astype(np.uint8)

  def arrays(self, which):
    assert which == "test"
    return self.images, np.zeros(len(self.images), np.int32)


@pytest.mark.parametrize("shape, trace", [((8, 8, 1), "exact"), ((10, 10, 1), "hutchinson")])
def test_image_nll_uniform_model_is_8_bits_per_dim(shape, trace):
  """A model uniform on [−1, 1]^d scores exactly 8 bits/dim on uniformly dequantized 8-bit
  data; the trace is exact up to 64 dimensions and Hutchinson above."""
  family, dataset = _UniformFamily(), _Levels(shape)
  experiment = types.SimpleNamespace(family=family, dataset=dataset)
  config = _eval_config()
  config.nll.update(num_examples=6, batch_size=3, exact_max_dim=64)
  result = evaluate.negative_log_likelihood(experiment, None, config)
  assert result["nll_bits_per_dim"] == pytest.approx(8.0, abs=1e-6)
  assert result["trace"] == trace and result["dequantization"] == "uniform"
  assert {t for t, _ in family.seen} == {trace} and result["num_examples"] == 6


def test_dequantized_levels_land_in_their_bins():
  levels = jnp.arange(256, dtype=jnp.uint8).reshape(16, 16)
  x = bits.dequantize(jax.random.key(0), levels)
  k = np.asarray(levels, np.float64)
  assert np.all(x >= 2 * k / 256 - 1) and np.all(x < 2 * (k + 1) / 256 - 1)
  assert float(bits.bits_per_dim(-64 * np.log(2.0), 64)) == pytest.approx(8.0)


def test_toy_sliced_wasserstein_floor_is_the_score_of_fresh_true_samples():
  """The floor reported beside SW₂ is exactly the metric of another true sample set of
  the same size: the spread two sample sets of one distribution have."""
  import jax
  from configs import eval as eval_base
  from genode import data as data_lib
  dataset = data_lib.get_dataset(name="toy2d", distribution="8gaussians")
  config = eval_base.get_config("runlocal")
  metric = evaluate._toy_metric(dataset, ("sliced_wasserstein",), config, 500)
  fresh = dataset.sample(jax.random.fold_in(jax.random.key(int(config.seed)),
                                            evaluate.TOY_FLOOR_FOLD), 500)
  out = metric(fresh)
  assert out["sliced_wasserstein"] == out["sliced_wasserstein_floor"] > 0
  shifted = metric(np.asarray(fresh) + 2.0)
  assert shifted["sliced_wasserstein"] > 3 * shifted["sliced_wasserstein_floor"]


@pytest.mark.slow
def test_repeats_add_per_set_values_and_the_pooled_metric(workdir, first_run, tmp_path):
  # set 0 of a repeated evaluation is exactly the single evaluation; the pooled value is the
  # metric of all sets together, scored against the same references
  config = _eval_config(adaptive_solvers=(), metrics=("sliced_wasserstein", "mmd"), repeats=3)
  records = evaluate.evaluate_workdir(workdir, config)
  single = first_run[0][0]["metrics"]
  m = records[0]["metrics"]
  assert records[0]["repeats"] == 3 and records[0]["num_samples"] == 64
  assert m["sliced_wasserstein"] == single["sliced_wasserstein"]
  assert m["sliced_wasserstein_repeats"][0] == single["sliced_wasserstein"]
  values = m["sliced_wasserstein_repeats"]
  assert len(values) == 3 and len(set(values)) == 3  # three different noise draws
  assert m["sliced_wasserstein_repeat_mean"] == pytest.approx(np.mean(values))
  assert m["sliced_wasserstein_repeat_sd"] == pytest.approx(np.std(values, ddof=1))
  assert m["mmd2_pooled"] not in m["mmd2_repeats"]
  # The pooled value is the scorer's on the concatenated sets.
  experiment = workdir_lib_restore(workdir)
  scorer = evaluate._Scorer.build(experiment.experiment, config,
                                  ("sliced_wasserstein",), 64)
  family = experiment.experiment.family
  weights = evaluate.workdir_lib.select_params(experiment.state, "ema")
  setting = family.sampler_settings(config)[0]
  x, _ = evaluate._draw_samples(family, weights, setting, 64, config, 3)
  assert x.shape == (192, 2)
  assert scorer(x)["sliced_wasserstein"] == pytest.approx(m["sliced_wasserstein_pooled"])
  with pytest.raises(ValueError, match="repeats must be a positive integer"):
    evaluate.check_eval_config(_eval_config(repeats=0))


def workdir_lib_restore(path):
  from genode import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  return workdir_lib.restore_workdir(path)

"""The cnf family (FFJORD, genode.ffjord): identities with exact answers, the shared loop,
the evaluation and the launchers on a cnf workdir.

The CNF log-likelihood of a linear vector field against its closed form is
tests/test_cnf.py's (the backend's `cnf_log_likelihood`, which this family calls).
"""

import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import eval as eval_config_lib
from configs import toy2d_ffjord
from genode import bits
from genode import loop
from genode import workdir as workdir_lib
from genode.data import uint8_to_float
from genode.evaluation import evaluate
from genode.experiment import Experiment
from genode.ffjord import CNF, Solve
from genode.models import ConcatSquashMLP
from genode.train import DataParallel
from genode.train.checkpoint import Checkpointer

sys.path.insert(0, os.path.dirname(__file__))
import train_worker  # noqa: E402
from test_launch import assert_one_line_error, launch  # noqa: E402

WORKER = os.path.join(os.path.dirname(__file__), "train_worker.py")


def _family(**kw):
  fields = dict(model=ConcatSquashMLP(hidden_dims=(16, 16), activation="tanh"),
                data_shape=(2,), time_length=0.5)
  fields.update(kw)
  return CNF(**fields)


def _random_params(family, seed=0, scale=0.5, dtype=jnp.float64):
  """Initial parameters with every leaf redrawn N(0, scale²): a non-trivial field (the
  initial output layer is zero, f = 0)."""
  params = family.init_params(jax.random.key(seed), None)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return tree.unflatten([scale * jax.random.normal(k, leaf.shape, dtype)
                         for k, leaf in zip(keys, leaves)])


def test_initial_field_is_zero_so_the_density_is_the_prior(x64):
  family = _family()
  params = family.init_params(jax.random.key(0), None)
  x = jax.random.normal(jax.random.key(1), (5, 2), jnp.float64)
  logp, info = family.log_likelihood(params, x, jax.random.key(2))
  np.testing.assert_allclose(logp, -0.5 * jnp.sum(x**2, -1) - np.log(2 * np.pi), atol=1e-12)
  assert info.num_probes == 0


def test_hutchinson_training_loss_is_unbiased_for_the_exact_one(x64):
  """The objective's per-sample loss with K Rademacher/Gaussian probes, averaged, equals the
  exact-trace loss of the same fixed-step solve: the state path does not depend on the
  probes and each stage's estimate is linear in εεᵀ, so E[loss] is exact, not just close."""
  num_probes = 4000
  for probe in ("rademacher", "gaussian"):
    solve = Solve(trace="hutchinson", probe=probe, num_probes=num_probes, solver="tsit5",
                  num_steps=4, adjoint="backsolve")
    family = _family(train_solve=solve)
    params = _random_params(family)
    x = jax.random.normal(jax.random.key(3), (6, 2), jnp.float64)
    batch, key = {"x": x}, jax.random.key(4)
    loss, metrics = family.objective()(params, batch, key)
    exact = dataclasses.replace(family, train_solve=dataclasses.replace(solve, trace="exact"))
    exact_loss, _ = exact.objective()(params, batch, key)
    # The standard error of the K-probe mean, from the same probes (same key split).
    _, probe_key = jax.random.split(key)
    _, info = family.solve_log_likelihood(params, x, probe_key, solve)
    stderr = np.asarray(info.stderr) / 2  # loss = −log p / d, d = 2
    # One probe's estimate has a spread (the test can fail), the K-probe mean a small one.
    assert np.all(stderr * np.sqrt(num_probes) > 1e-3) and np.all(stderr < 5e-3), stderr
    assert np.all(np.abs(np.asarray(loss - exact_loss)) <= 4 * stderr), (
        probe, (loss - exact_loss) / stderr)
    np.testing.assert_allclose(metrics["nll_nats"], -jnp.mean(-2 * loss), rtol=1e-12)


def test_rnode_loss_adds_the_weighted_integrals(x64):
  """With RNODE weights the per-sample loss is (−log p + λ_K ∫‖f‖² + λ_J ∫‖∇f‖_F²)/d of
  the same solve (same probes); the log-likelihood metrics are the unregularized ones, and
  weights 0 give FFJORD's loss exactly."""
  solve = Solve(trace="hutchinson", solver="tsit5", num_steps=4)
  plain = _family(train_solve=solve)
  params = _random_params(plain)
  batch, key = {"x": jax.random.normal(jax.random.key(3), (6, 2), jnp.float64)}, jax.random.key(4)
  family = dataclasses.replace(plain, kinetic_weight=0.3, jacobian_weight=0.05)
  loss, metrics = family.objective()(params, batch, key)
  plain_loss, plain_metrics = plain.objective()(params, batch, key)
  _, probe_key = jax.random.split(key)
  logp, info = family.solve_log_likelihood(params, batch["x"], probe_key, solve,
                                           regularize=True)
  assert np.all(np.asarray(info.kinetic) > 0) and np.all(np.asarray(info.jacobian_frobenius) > 0)
  np.testing.assert_allclose(
      loss, (-logp + 0.3 * info.kinetic + 0.05 * info.jacobian_frobenius) / 2, rtol=1e-12)
  np.testing.assert_allclose(plain_loss, -logp / 2, rtol=1e-12)
  np.testing.assert_allclose(metrics["nll_nats"], plain_metrics["nll_nats"], rtol=1e-12)
  np.testing.assert_allclose(metrics["kinetic"], jnp.mean(info.kinetic), rtol=1e-12)
  assert "kinetic" not in plain_metrics and "RNODE λ_K=0.3 λ_J=0.05" in family.describe()


def test_a_2d_density_integrates_to_one(x64):
  family = _family(time_length=1.0)
  params = _random_params(family, seed=5, scale=0.3)
  edge, n = 7.0, 141
  axis = np.linspace(-edge, edge, n)
  grid = jnp.asarray(np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2))
  logp, _ = jax.jit(lambda p, x: family.log_likelihood(p, x, jax.random.key(0), rtol=1e-8,
                                                       atol=1e-8))(params, grid)
  mass = float(jnp.sum(jnp.exp(logp)) * (axis[1] - axis[0]) ** 2)
  assert abs(mass - 1.0) < 1e-3, mass
  # Not the prior: the field moved the density.
  prior = -0.5 * jnp.sum(grid**2, -1) - np.log(2 * np.pi)
  assert float(jnp.max(jnp.abs(logp - prior))) > 0.1


def test_dequantization_is_the_evaluations(x64):
  """Training dequantizes the dataset's k/127.5 − 1 exactly as launch.evaluate does the
  test split's uint8 levels: bits.dequantize with the same key."""
  family = _family(data_shape=(4, 4, 1), num_levels=256)
  levels = np.random.default_rng(0).integers(0, 256, (3, 4, 4, 1)).astype(np.uint8)
  key = jax.random.key(7)
  x = family.preprocess(jnp.asarray(uint8_to_float(levels)), key)
  np.testing.assert_array_equal(x, bits.dequantize(key, levels, num_levels=256).astype(x.dtype))
  assert np.all((x >= 2 * levels / 256 - 1) & (x < 2 * (levels.astype(int) + 1) / 256 - 1))


def _runlocal(**train):
  config = toy2d_ffjord.get_config("checkerboard,runlocal")
  config.train.update(sample_every=0, **train)
  return config


def test_training_equals_one_device_under_shard_map_and_pmap():
  """Two steps of the runlocal config's train step on 8 devices (shard_map, pmap) and on
  one device vmapped over the same 8 shards ("single"): the same parameters. (With the
  backsolve adjoint: the checkpointed one fails inside shard_map/pmap, genode/ffjord.py.)"""
  config = _runlocal()
  config.cnf.train.adjoint = "backsolve"
  experiment = Experiment.from_config(config, validate=False)
  state0 = experiment.init_state()
  results = {}
  for mode, kw in {"shard_map": {}, "pmap": {}, "single": {"num_shards": 8}}.items():
    parallel = DataParallel(mode, donate=False, **kw)
    step = parallel.compile(experiment.train_step())
    state = parallel.replicate(state0)
    losses = []
    for k in range(2):
      state, metrics = step(state, parallel.shard_batch(experiment.train_batch(k)))
      losses.append(float(metrics["loss"]))
    results[mode] = (jax.device_get(parallel.unreplicate(state)), losses)
  reference, reference_losses = results["single"]
  moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(reference.params),
                                                     jax.tree.leaves(state0.params))]
  assert all(moved)
  for mode in ("shard_map", "pmap"):
    state, losses = results[mode]
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 state.params, reference.params)


@pytest.fixture(scope="module")
def worker_env(tmp_path_factory):
  with train_worker.persistent_compilation_cache(str(tmp_path_factory.mktemp("xla"))) as env:
    yield env


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tmp_path, worker_env):
  import subprocess  # pylint: disable=g-import-not-at-top
  num_steps, every, kill_after = 6, 2, 2
  straight = str(tmp_path / "straight")
  loop.train(train_worker.resume_config(num_steps, every, "toy2d_ffjord"), straight)
  pieces = str(tmp_path / "pieces")
  for args, code in (((kill_after,), -9), ((), 0)):
    result = subprocess.run(
        [sys.executable, WORKER, pieces, str(num_steps), str(every), *map(str, args),
         "--config=toy2d_ffjord"], capture_output=True, text=True, timeout=600,
        env=worker_env)
    assert result.returncode == code, result.stderr[-3000:]
  assert "from checkpoint 2" in result.stderr
  experiment = Experiment.from_config(workdir_lib.load_config(straight), validate=False)
  a = Checkpointer(straight).restore(experiment.abstract_state(), num_steps)
  b = Checkpointer(pieces).restore(experiment.abstract_state(), num_steps)
  for name in ("params", "ema_params", "opt_state", "rng", "step"):
    jax.tree.map(np.testing.assert_array_equal, getattr(a, name), getattr(b, name))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A runlocal toy2d cnf workdir trained through the shared loop (4 steps)."""
  workdir = str(tmp_path_factory.mktemp("cnf") / "run")
  config = toy2d_ffjord.get_config("checkerboard,runlocal")
  state = loop.train(config, workdir)
  return workdir, config, state


def test_loop_evaluate_and_sample_work_on_a_cnf_workdir(trained, tmp_path):
  workdir, config, state = trained
  n = config.train.num_steps
  assert int(state.step) == n and Checkpointer(workdir).steps()[-1] == n
  assert os.path.exists(os.path.join(workdir, "samples", f"step_{n}.png"))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert all(np.isfinite(r["nll_nats"]) and r["nfe"] == 1 + 6 * 8 for r in records)
  eval_config = eval_config_lib.get_config("runlocal")
  eval_config.adaptive_solvers = ("dopri5",)
  records = evaluate.evaluate_workdir(workdir, eval_config)
  samples = {r["name"]: r for r in records if r["kind"] == "samples"}
  # euler/heun at 4 equal steps, dopri5 adaptive; NFE as counted by the backend.
  assert set(samples) == {"euler_uniform4", "heun_uniform4", "dopri5_tol0.01"}
  assert samples["euler_uniform4"]["nfe"] == 4 and samples["heun_uniform4"]["nfe"] == 8
  assert all(r["finite"] and r["samples_per_s"] > 0 for r in samples.values())
  (nll,) = [r for r in records if r["kind"] == "likelihood"]
  assert nll["trace"] == "exact" and nll["t1"] == 1.0 and nll["nfe"] > 0
  assert np.isfinite(nll["nll_nats"]) and nll["dequantization"] is None
  record = workdir_lib.sample_workdir(workdir, solver="heun", steps=3, num_samples=5,
                                      out=str(tmp_path / "s"))
  assert record["nfe"] == 6 and record["finite"] and record["steps"] == 3
  assert np.load(record["npz"])["x"].shape == (5, 2)


def test_bad_input_is_one_clear_line(trained):
  workdir, _, _ = trained
  family = Experiment.from_config(toy2d_ffjord.get_config("runlocal"), validate=False).family
  cases = [
      (lambda: family.sampler_overrides(grid="karras"), "cnf family has no grid"),
      (lambda: family.sampler_overrides(solver="dpmpp_2m"), "fixed-step one of ['dopri5', 'euler'"),
      (lambda: family.sampler_overrides(foo=1), "Unknown sampler options ['foo']"),
      (lambda: Solve(solver="rk45"), "Unknown adaptive solver 'rk45'"),
      (lambda: Solve(adjoint="magic"), "Unknown adjoint 'magic'"),
      (lambda: Solve(trace="approximate"), "Unknown trace 'approximate'"),
      (lambda: _family(num_levels=1), "num_levels must be 0"),
      (lambda: _family(jacobian_weight=-1.0), "cnf.jacobian_weight must be ≥ 0, got -1.0"),
      (lambda: family.log_likelihood(None, jnp.zeros((2, 3)), None), "expected (B, 2)"),
  ]
  for fn, match in cases:
    with pytest.raises(ValueError, match=_escape(match)):
      fn()
  for field, value, match in [("cnf.train.solver", "rk45", "Unknown solver 'rk45' for the cnf"),
                              ("cnf.foo", 1, "Unknown config.cnf fields ['foo']"),
                              ("cnf.kinetic_weight", -0.5, "cnf.kinetic_weight must be ≥ 0"),
                              ("model.activation", "relu6", "Unknown activation 'relu6'")]:
    config = toy2d_ffjord.get_config("runlocal")
    section, _, name = field.rpartition(".")
    node = config
    for part in section.split("."):
      node = node[part]
    node[name] = value
    with pytest.raises(ValueError, match=_escape(match)):
      Experiment.from_config(config)
  config = toy2d_ffjord.get_config("runlocal")
  config.parallel = "shard_map"
  with pytest.raises(ValueError, match="use parallel='single' or cnf.train.adjoint='backsolve'"):
    Experiment.from_config(config)
  with pytest.raises(ValueError, match="one distribution at most"):
    toy2d_ffjord.get_config("checkerboard,8gaussians")


def _escape(text):
  import re  # pylint: disable=g-import-not-at-top
  return re.escape(text)


@pytest.mark.slow
def test_launch_sample_refuses_a_sigma_grid_in_one_line(trained):
  workdir, _, _ = trained
  status, stderr = launch("sample", f"--workdir={workdir}", "--grid=karras")
  assert_one_line_error(status, stderr, "cnf family has no grid")

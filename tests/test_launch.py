"""The launchers, run as a user runs them: each user error is one line, no traceback.

Each launch is its own process, forked from `tests/launcher_server.py` once that has done
the imports (each launch would otherwise spend ~4 CPU s on them).
"""

import atexit
import json
import os
import subprocess
import sys

import pytest

from configs import toy2d_edm
from genode import loop
from genode import workdir as workdir_lib

ROOT = os.path.join(os.path.dirname(__file__), "..")
TOY = "configs/toy2d_edm.py:runlocal"


SERVER = os.path.join(os.path.dirname(__file__), "launcher_server.py")
# Read when a Python process imports jax (or starts), not when a launcher runs: a launch
# whose environment changes one of them cannot come from the server's preloaded process.
_IMPORT_TIME = ("JAX_", "EQX_", "PYTHON", "OPENBLAS", "OMP_", "MKL_")
_server = None


def _import_time_env(env):
  return {k: v for k, v in env.items() if k.startswith(_IMPORT_TIME)}


def _launcher_server(env):
  """This test process's `tests/launcher_server.py`, started on first use."""
  global _server  # pylint: disable=global-statement
  if _server is not None and (_server.poll() is not None or _server.env != _import_time_env(env)):
    _server.kill()
    _server = None
  if _server is None:
    _server = subprocess.Popen([sys.executable, SERVER], cwd=ROOT, env=env, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    _server.env = _import_time_env(env)
    assert json.loads(_server.stdout.readline()) == {"ready": True}
    atexit.register(_server.kill)
  return _server


def launch(name, *args, timeout=300):
  """Runs `python -m launch.<name> args` (forked from `tests/launcher_server.py`, which has
  done the imports); returns (exit status, stderr)."""
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("GENODE_TRACEBACK", None)
  server = _launcher_server(env)
  server.stdin.write(json.dumps(dict(name=name, args=list(args), env=env, cwd=ROOT,
                                     timeout=timeout)) + "\n")
  server.stdin.flush()
  reply = json.loads(server.stdout.readline())
  if "error" in reply:
    raise RuntimeError(f"launch.{name}: {reply['error']}")
  return reply["status"], reply["stderr"]


def assert_one_line_error(status, stderr, pattern):
  assert status != 0, stderr
  assert "Traceback" not in stderr, stderr[-3000:]
  errors = [line for line in stderr.splitlines() if line.startswith(("error:", "FATAL"))
            or "Unknown config field" in line]
  assert errors, stderr[-3000:]
  assert pattern in errors[0] or pattern in stderr, (pattern, stderr[-3000:])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A toy2d workdir with checkpoints at steps 2 and 4."""
  workdir = str(tmp_path_factory.mktemp("launch") / "run")
  config = toy2d_edm.get_config("runlocal")
  config.train.sample_every = 0
  loop.train(config, workdir)
  return workdir


@pytest.mark.slow
@pytest.mark.parametrize("args, pattern", [
    (["--config.formulation.name=nope"], "valid formulations"),
    (["--config.model.name=nope"], "valid models"),
    (["--config.sampler.solver=nope"], "valid solvers"),
    (["--config.nonexistent=1"], "Unknown config field(s) ['nonexistent']"),
    (["--config.train.batch_size=7"], "does not split over"),
], ids=["formulation", "model", "solver", "field", "batch"])
def test_train_user_errors(tmp_path, args, pattern):
  status, stderr = launch("train", f"--config={TOY}", f"--workdir={tmp_path / 'w'}", *args)
  assert_one_line_error(status, stderr, pattern)
  assert not (tmp_path / "w" / "checkpoints").exists()


@pytest.mark.slow
def test_train_refuses_a_workdir_of_another_experiment_or_run(tmp_path):
  workdir = tmp_path / "w"
  workdir_lib.prepare_workdir(str(workdir), toy2d_edm.get_config("runlocal"))
  before = (workdir / "config.json").read_text()
  status, stderr = launch("train", f"--config={TOY}", f"--workdir={workdir}",
                          "--config.seed=12345")
  assert_one_line_error(status, stderr, "holds a different experiment (seed: 0 -> 12345)")
  assert (workdir / "config.json").read_text() == before
  # A workdir held by a live run (this test process) is refused, naming the holder.
  with workdir_lib.hold(str(workdir)):
    status, stderr = launch("train", f"--config={TOY}", f"--workdir={workdir}")
  assert_one_line_error(status, stderr, f"pid {os.getpid()}")
  # Missing data files say where they go; a config argument that does not exist is named.
  status, stderr = launch("train", "--config=configs/mnist_edm.py:runlocal",
                          f"--workdir={tmp_path / 'm'}", f"--config.data.path={tmp_path}/nowhere")
  assert_one_line_error(status, stderr, "--config.data.path")
  status, stderr = launch("train", "--config=configs/toy2d_edm.py:bogus",
                          f"--workdir={tmp_path / 'b'}")
  assert_one_line_error(status, stderr, "bogus")


@pytest.mark.slow
def test_sample_and_evaluate_user_errors(trained, tmp_path):
  nowhere = str(tmp_path / "nowhere")
  for name in ("sample", "evaluate"):
    status, stderr = launch(name, f"--workdir={nowhere}")
    assert_one_line_error(status, stderr, "does not exist")
    status, stderr = launch(name, f"--workdir={trained}", "--step=99")
    assert_one_line_error(status, stderr, "available steps: [2, 4]")
  status, stderr = launch("sample", f"--workdir={trained}", "--solver=rk4")
  assert_one_line_error(status, stderr, "valid solvers")
  status, stderr = launch("sample", f"--workdir={trained}", "--grid=cosine")
  assert_one_line_error(status, stderr, "valid grids")
  status, stderr = launch("sample", f"--workdir={trained}", "--sigmas=1,2,0")
  assert_one_line_error(status, stderr, "strictly decreasing")
  status, stderr = launch("evaluate", f"--workdir={trained}", "--eval.solvers=('rk4',)")
  assert_one_line_error(status, stderr, "Unknown solver 'rk4'")
  status, stderr = launch("evaluate", f"--workdir={trained}", "--eval.nonexistent=1")
  assert_one_line_error(status, stderr, "Unknown config field(s) ['nonexistent']")
  empty = tmp_path / "empty"
  workdir_lib.prepare_workdir(str(empty), toy2d_edm.get_config("runlocal"))
  status, stderr = launch("sample", f"--workdir={empty}")
  assert_one_line_error(status, stderr, "No checkpoints")
  status, stderr = launch("benchmark", "nope")
  assert status != 0 and "Traceback" not in stderr and "benchmarks: ['sampling'" in stderr
  assert not os.path.exists(os.path.join(trained, "eval"))  # nothing was written


@pytest.mark.slow
def test_sample_writes_what_it_says(trained, tmp_path):
  out = str(tmp_path / "s")
  result = subprocess.run(
      [sys.executable, "-m", "launch.sample", f"--workdir={trained}", "--solver=euler",
       "--grid=uniform_t", "--steps=3", "--num_samples=5", f"--out={out}"],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(result.stdout)
  assert record["nfe"] == 3 and record["grid"] == "uniform_t" and record["step"] == 4
  assert os.path.exists(out + ".png") and os.path.exists(out + ".npz")

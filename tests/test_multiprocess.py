"""Two processes joined by jax.distributed (gloo, 2 CPU devices each) train like one
process with 4 devices: the same global mesh, each process feeding its own rows."""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from genode.train import DataParallel, initialize
from multiprocess_worker import flat_arrays, train_toy

WORKER = pathlib.Path(__file__).with_name("multiprocess_worker.py")
TIMEOUT_S = 240  # per run of both processes; they stop at it rather than hang CI


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def _run_workers(tmp_path, num_processes=2):
  coordinator = f"127.0.0.1:{_free_port()}"
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  outputs = [tmp_path / f"process_{i}.npz" for i in range(num_processes)]
  processes = [
      subprocess.Popen([sys.executable, str(WORKER), str(out), coordinator, str(num_processes),
                        str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
      for i, out in enumerate(outputs)]
  try:
    logs = [p.communicate(timeout=TIMEOUT_S)[0].decode(errors="replace") for p in processes]
  except subprocess.TimeoutExpired:
    for p in processes:
      p.kill()
      p.communicate()
    pytest.fail(f"the {num_processes} worker processes did not finish in {TIMEOUT_S} s")
  for i, (p, log) in enumerate(zip(processes, logs)):
    assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n{log[-4000:]}"
  return [dict(np.load(out)) for out in outputs]


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_four_devices(tmp_path):
  results = _run_workers(tmp_path)
  reference_run = train_toy(DataParallel("shard_map", devices=jax.devices()[:4]))
  reference = flat_arrays(reference_run.state, reference_run.metrics)
  for process, result in enumerate(results):
    assert sorted(result) == sorted(reference)
    for name, expected in reference.items():
      error = np.max(np.abs(result[name] - expected))
      assert error <= 1e-6 * np.max(np.abs(expected)), (process, name, error)
  assert reference["metrics/grad_norm"][0] > 0.1  # clipping binds here too


def test_initialize_is_a_no_op_for_one_process(monkeypatch):
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  for info in (initialize(num_processes=1), initialize()):
    assert (info.process_index, info.process_count) == (0, 1)
    assert info.device_count == jax.device_count()
  assert not jax.distributed.is_initialized()

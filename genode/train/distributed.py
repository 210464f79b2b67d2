"""Joining processes into one JAX runtime (multi-host / multi-process training).

Call `initialize()` first thing in every process, before any JAX computation. Each
process then builds the same `DataParallel("shard_map")` mesh over `jax.devices()` (all
processes' devices) and feeds only its own rows of the global batch
(`DataParallel.shard_batch` uses `jax.make_array_from_process_local_data`).
"""

from __future__ import annotations

import logging
import os
from typing import NamedTuple

import jax


class ProcessInfo(NamedTuple):
  """Where this process sits in the runtime."""

  process_index: int
  process_count: int
  local_device_count: int
  device_count: int


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *,
               initialization_timeout: int = 300) -> ProcessInfo:
  """`jax.distributed.initialize`, or nothing for a single process.

  Unset arguments come from JAX_COORDINATOR_ADDRESS ("host:port"), JAX_NUM_PROCESSES and
  JAX_PROCESS_ID, then from JAX's cluster detection (SLURM, Open MPI, Cloud TPU, ...).
  With one process (num_processes == 1, or nothing set and no cluster detected) it is a
  no-op, as it is when nothing is set and JAX has already run (a notebook). CPU
  collectives across processes use gloo. Calling it twice is harmless.
  """
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  num_processes = _env_int("JAX_NUM_PROCESSES", num_processes)
  process_id = _env_int("JAX_PROCESS_ID", process_id)
  if num_processes == 1 or jax.distributed.is_initialized():
    return process_info()
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=initialization_timeout)
  except (ValueError, RuntimeError) as error:
    nothing_set = coordinator_address is None and num_processes is None and process_id is None
    if not nothing_set:
      raise
    if isinstance(error, RuntimeError):  # JAX already ran: too late to join a cluster
      logging.warning("genode.train.distributed: %s; continuing as one process.", error)
    else:
      logging.info("genode.train.distributed: no coordinator or cluster found; one process.")
  return process_info()


def process_info() -> ProcessInfo:
  """This process's index, the process count and the device counts."""
  return ProcessInfo(jax.process_index(), jax.process_count(), jax.local_device_count(),
                     jax.device_count())


def _env_int(name: str, value: int | None) -> int | None:
  if value is not None or name not in os.environ:
    return value
  try:
    return int(os.environ[name])
  except ValueError:
    raise ValueError(f"Environment variable {name} must be an integer, got "
                     f"{os.environ[name]!r}") from None

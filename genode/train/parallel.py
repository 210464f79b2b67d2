"""Runs a per-device train step over devices: shard_map, pmap, or one device.

`DataParallel(mode)` owns the placement: `replicate` puts a state on the devices,
`shard_batch` splits this process's batch into per-device shards, `compile` turns a
per-device `step(state, batch, *frozen) -> (state, metrics)` (which may use `lax.pmean`,
`lax.axis_index` over `axis_name`) into a jitted callable on (replicated state, sharded
batch) that returns (replicated state, metrics as single scalars).

  shard_map  `jax.jit(jax.shard_map(step))` over a 1-D `Mesh` of all devices (all
             processes: the mesh is global, each process feeds its local shards);
             `check_vma` off by default (one gradient all-reduce; see the class).
  pmap       `jax.pmap(step, axis_name)`: the state carries a leading device axis.
  single     one device; the step is `vmap`ped over `num_shards` shards with the same
             axis name, so an n-device run's numbers are reproduced on one device.

All three give the same numbers for the same shards (tests/test_parallel.py).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MODES = ("shard_map", "pmap", "single")

PerDeviceStep = Callable[..., tuple[Any, Any]]


class DataParallel:
  """Data parallelism over a named axis; see the module docstring.

  mode: "shard_map" | "pmap" | "single".
  devices: the devices to use (default: all, `jax.devices()`; for "single", the first).
  axis_name: the axis the per-device step reduces over.
  num_shards: "single" only: how many per-device shards to vmap over (default 1).
  donate: donate the input state's buffers to the step (the old state is then invalid).
  check_vma: "shard_map" only: JAX's static check that outputs are replicated. Off by
    default: the step is written in the pmap model (it pmeans per-device gradients), and
    with the check on, the gradient of the replicated params is already device-summed
    (`genode.train.step` handles that, see "the pmean trap") but its pmean is then a
    second, redundant all-reduce of the whole gradient. Both give the same numbers.
  """

  def __init__(self, mode: str = "shard_map", devices: Sequence[jax.Device] | None = None, *,
               axis_name: str = "data", num_shards: int | None = None, donate: bool = True,
               check_vma: bool = False):
    if mode not in MODES:
      raise ValueError(f"Unknown data-parallel mode {mode!r}; valid modes: {list(MODES)}")
    if num_shards is not None and mode != "single":
      raise ValueError(f"num_shards is only for mode='single' (mode {mode!r} has one shard "
                       "per device)")
    if check_vma and mode != "shard_map":
      raise ValueError(f"check_vma is only for mode='shard_map', got mode {mode!r}")
    self.mode = mode
    self.axis_name = axis_name
    self.donate = donate
    self.check_vma = check_vma
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
      raise ValueError("DataParallel needs at least one device, got an empty list")
    if mode == "single":
      devices = devices[:1]
    self.devices = devices
    self.mesh = Mesh(np.array(devices), (axis_name,)) if mode == "shard_map" else None
    self.num_shards = (num_shards or 1) if mode == "single" else len(devices)
    if self.num_shards < 1:
      raise ValueError(f"num_shards must be >= 1, got {self.num_shards}")

  # -- sizes ------------------------------------------------------------------
  @property
  def num_devices(self) -> int:
    """Devices the step runs on, over all processes."""
    return len(self.devices)

  @property
  def local_devices(self) -> list[jax.Device]:
    """This process's devices, in mesh order."""
    index = jax.process_index()
    return [d for d in self.devices if d.process_index == index]

  @property
  def num_local_shards(self) -> int:
    """Shards this process feeds: its devices (or `num_shards` in "single")."""
    return self.num_shards if self.mode == "single" else len(self.local_devices)

  # -- placement --------------------------------------------------------------
  def replicate(self, tree: Any) -> Any:
    """One copy of `tree` (identical in every process) → the step's replicated layout."""
    if self.mode == "shard_map":
      sharding = NamedSharding(self.mesh, P())
      return jax.tree.map(
          lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)
    if self.mode == "pmap":
      copies = len(self.local_devices)
      return jax.device_put(jax.tree.map(lambda x: np.stack([np.asarray(x)] * copies), tree),
                            self._pmap_sharding())
    # A copy, so that donating the result never invalidates the caller's `tree`.
    return jax.device_put(tree, self.devices[0], may_alias=False)

  def unreplicate(self, tree: Any) -> Any:
    """The replicated layout → one copy on this process's first device.

    A copy: later (donating) steps do not invalidate it, so it can be checkpointed or
    evaluated while training goes on.
    """
    if self.mode == "shard_map":
      return jax.tree.map(lambda x: _copy(x.addressable_shards[0].data), tree)
    if self.mode == "pmap":
      return jax.tree.map(lambda x: x[0], tree)
    return jax.tree.map(_copy, tree)

  def shard_batch(self, batch: Any) -> Any:
    """This process's batch (B_local, ...) leaves → the step's sharded layout.

    In one process this is the global batch. Shard i of the mesh gets rows
    [i·b, (i+1)·b) of the global batch, b = B/num_shards; process p holds the rows of
    its devices (contiguous for `jax.devices()` order). B_local must divide evenly.
    """
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(batch)}
    if len(sizes) != 1 or None in sizes:
      raise ValueError("Every batch leaf needs the same leading batch dimension; got "
                       f"shapes {jax.tree.map(np.shape, batch)}")
    (size,) = sizes
    shards = self.num_local_shards
    if size % shards:
      raise ValueError(f"Batch size {size} (this process) is not divisible by the {shards} "
                       f"{'shards' if self.mode == 'single' else 'local devices'} of "
                       f"mode {self.mode!r}")
    if self.mode == "shard_map":
      sharding = NamedSharding(self.mesh, P(self.axis_name))
      return jax.tree.map(
          lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)
    split = jax.tree.map(lambda x: np.reshape(x, (shards, size // shards) + np.shape(x)[1:]),
                         batch)
    if self.mode == "single":
      return jax.device_put(split, self.devices[0])
    return jax.device_put(split, self._pmap_sharding())

  def _pmap_sharding(self) -> NamedSharding:
    """The layout of pmap's inputs and outputs: a leading axis over the local devices."""
    mesh = Mesh(np.array(self.local_devices), (self.axis_name,))
    return NamedSharding(mesh, P(self.axis_name))

  # -- the step ---------------------------------------------------------------
  def compile(self, per_device_step: PerDeviceStep, num_frozen: int = 0
              ) -> Callable[..., tuple[Any, Any]]:
    """jitted step(replicated state, sharded batch, *frozen) -> (replicated state, metrics).

    The per-device step's outputs must be device-invariant (pmean'd); metrics come back
    as single copies (scalars), ready for `float()`. `num_frozen` trailing arguments are
    replicated inputs that are not trained (e.g. a teacher's parameters; lay them out
    with `replicate`): arguments of the compiled step, never constants baked into it.
    """
    donate = (0,) if self.donate else ()
    if self.mode == "shard_map":
      return jax.jit(
          jax.shard_map(per_device_step, mesh=self.mesh,
                        in_specs=(P(), P(self.axis_name)) + (P(),) * num_frozen,
                        out_specs=(P(), P()), check_vma=self.check_vma),
          donate_argnums=donate)
    if self.mode == "single":
      return jax.jit(
          jax.vmap(per_device_step, in_axes=(None, 0) + (None,) * num_frozen,
                   out_axes=(None, None), axis_name=self.axis_name),
          donate_argnums=donate)
    step = jax.pmap(per_device_step, axis_name=self.axis_name, devices=self.devices,
                    donate_argnums=donate)

    def run(state, batch, *frozen):
      state, metrics = step(state, batch, *frozen)
      return state, jax.tree.map(lambda x: x[0], metrics)

    return run


def _copy(x: jax.Array) -> jax.Array:
  return jax.device_put(x, x.sharding, may_alias=False)

"""The device mesh of a run, where each array lives on it, and global batches from local rows.

One mesh spans every device of every process, with two axes:

  * `data`: the batch is split along it; everything else is replicated along it.
  * `fsdp` (size `config.mesh.fsdp`, default 1): the batch is split along it too, and
    parameters and optimiser state are split along it as well (fully sharded data
    parallelism): each array over `config.mesh.fsdp_min_size` elements is cut along its
    largest dimension that the axis size divides. XLA gathers a layer's weights where the
    step needs them; nothing else in the step changes.

The mesh's axes are `Auto`: `jax.jit` is given the shardings of its inputs and outputs and
XLA propagates them through augmentation and the model. A mean over the batch axis (the
loss, BatchNorm's statistics) is therefore over the global batch, whatever the number of
devices or processes.

Every process loads only the rows of each global batch that its own devices hold
(`process_rows`) and `global_batch` assembles the global array from them with
`jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from carjax.errors import ConfigError

DATA, FSDP = "data", "fsdp"
BATCH_AXES = (DATA, FSDP)  # The batch is split over every device.
# Arrays smaller than this stay replicated under FSDP: splitting biases and BatchNorm
# scales saves nothing and costs a gather each.
DEFAULT_FSDP_MIN_SIZE = 2 ** 14


def fsdp_size(config: ml_collections.ConfigDict) -> int:
  mesh_cfg = config.get("mesh") or {}
  return int(mesh_cfg.get("fsdp", 1))


def make_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """A (`data`, `fsdp`) mesh over every device of every process."""
  num_devices = jax.device_count()
  fsdp = fsdp_size(config)
  if fsdp < 1 or num_devices % fsdp:
    raise ConfigError(f"config.mesh.fsdp={fsdp} must be a positive divisor of the "
                     f"{num_devices} devices")
  auto = jax.sharding.AxisType.Auto
  mesh = jax.make_mesh((num_devices // fsdp, fsdp), (DATA, FSDP), axis_types=(auto, auto))
  logging.info("Data-parallel mesh over %d devices (data=%d, fsdp=%d) in %d process(es): %s",
               num_devices, num_devices // fsdp, fsdp, jax.process_count(),
               ", ".join(str(d) for d in jax.devices()))
  return mesh


def check_batch_sizes(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
  """Fails, naming the fields, when a batch cannot be split evenly over the devices."""
  devices = mesh.size
  accum = int(config.train.get("grad_accum_steps", 1))
  if accum < 1:
    raise ConfigError(f"config.train.grad_accum_steps={accum} must be at least 1")
  if config.train.batch_size % (devices * accum):
    raise ConfigError(
        f"config.train.batch_size={config.train.batch_size} must be a multiple of the "
        f"{devices} devices × config.train.grad_accum_steps={accum} (each micro-batch is "
        "split over every device)")
  if config.eval.batch_size % devices:
    raise ConfigError(f"config.eval.batch_size={config.eval.batch_size} must be a multiple of "
                     f"the {devices} devices")


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis split over every device, the rest whole."""
  return NamedSharding(mesh, P(BATCH_AXES))


def micro_batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """[micro-batch index, batch, ...]: each micro-batch split over every device."""
  return NamedSharding(mesh, P(None, BATCH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def fsdp_spec(shape: tuple[int, ...], axis_size: int, min_size: int) -> P:
  """Splits the largest dimension `axis_size` divides (ties: the last), or nothing."""
  if axis_size <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  by_size = sorted(range(len(shape)), key=lambda d: (shape[d], d), reverse=True)
  for dim in by_size:
    if shape[dim] % axis_size == 0:
      spec = [None] * len(shape)
      spec[dim] = FSDP
      return P(*spec)
  return P()


def state_sharding(abstract_state: Any, mesh: jax.sharding.Mesh,
                   config: ml_collections.ConfigDict) -> Any:
  """A NamedSharding per leaf of the train state: replicated, or FSDP-split by shape.

  The rule depends on a leaf's shape only, so a parameter and its Adam moments (same shape)
  are split the same way and the optimiser update needs no communication.
  """
  axis = mesh.shape[FSDP]
  min_size = int((config.get("mesh") or {}).get("fsdp_min_size", DEFAULT_FSDP_MIN_SIZE))
  return jax.tree.map(
      lambda leaf: NamedSharding(mesh, fsdp_spec(tuple(leaf.shape), axis, min_size)),
      abstract_state)


def process_rows(sharding: NamedSharding, global_batch_size: int) -> np.ndarray:
  """Positions in a global batch whose rows this process's devices hold, in the order
  `jax.make_array_from_process_local_data` expects them (by position)."""
  index_map = sharding.addressable_devices_indices_map((global_batch_size,))
  starts = sorted({(s[0].start or 0, s[0].stop if s[0].stop is not None else global_batch_size)
                   for s in index_map.values()})
  return np.concatenate([np.arange(a, b) for a, b in starts])


def global_batch(local_batch: dict[str, np.ndarray], sharding: NamedSharding,
                 global_batch_size: int) -> dict[str, jax.Array]:
  """The global batch array from this process's rows (`process_rows`) of it."""
  return {k: jax.make_array_from_process_local_data(
              sharding, v, (global_batch_size,) + v.shape[1:])
          for k, v in local_batch.items()}

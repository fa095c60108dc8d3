"""Joining a multi-process JAX run, and what every process must agree on.

A run over several processes (several hosts, or several GPUs each driven by its own
process) is one JAX program: each process calls `initialize` first, then sees every device
of every process in `jax.devices()` and drives its own `jax.local_devices()`. Where the
cluster can be detected (Cloud TPU VMs, SLURM, Open MPI) JAX finds the coordinator, the
number of processes and this process's id itself; elsewhere they come from flags or from
the environment variables `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and
`JAX_PROCESS_ID` (the first is also read by JAX itself).

Only the primary process (index 0) writes the run's files (config, metrics, evaluation);
checkpoints are written by all of them together through orbax's multi-process protocol.
"""

from __future__ import annotations

import os
from typing import Callable, TypeVar

from absl import logging
import jax

T = TypeVar("T")

AUTO, ON, OFF = "auto", "true", "false"

# Set by SLURM (srun) and Open MPI (mpirun) in every task of a job: JAX's own cluster
# detection handles these, so `auto` initialises when a job has more than one task.
_TASK_COUNT_VARIABLES = ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def _int_or_none(value, name: str) -> int | None:
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _cluster_task_count() -> int:
  for name in _TASK_COUNT_VARIABLES:
    count = _int_or_none(os.environ.get(name), name)
    if count is not None:
      return count
  return 1


def initialize(mode: str = AUTO, coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None) -> bool:
  """Joins the multi-process run if there is one; returns whether it did.

  Args:
    mode: 'auto' joins when a coordinator is given (argument or `JAX_COORDINATOR_ADDRESS`)
      or a SLURM/Open MPI job has more than one task; 'true' always calls
      `jax.distributed.initialize` (JAX detects Cloud TPU, SLURM and Open MPI itself, so
      this is the setting for a TPU VM slice); 'false' never does (one process).
    coordinator_address: 'host:port' of process 0's coordinator service.
    num_processes: how many processes take part.
    process_id: this process's index, 0 ≤ id < num_processes.

  Must run before anything touches a JAX device.
  """
  if mode not in (AUTO, ON, OFF):
    raise ValueError(f"--distributed must be 'auto', 'true' or 'false', got {mode!r}")
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  if num_processes is None:
    num_processes = _int_or_none(os.environ.get("JAX_NUM_PROCESSES"), "JAX_NUM_PROCESSES")
  if process_id is None:
    process_id = _int_or_none(os.environ.get("JAX_PROCESS_ID"), "JAX_PROCESS_ID")
  given = coordinator_address is not None or num_processes is not None or process_id is not None
  if mode == OFF or (mode == AUTO and not given and _cluster_task_count() <= 1):
    return False
  if given and None in (coordinator_address, num_processes, process_id):
    raise ValueError(
        "a multi-process run needs all of --coordinator_address, --num_processes and "
        f"--process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID); got "
        f"{coordinator_address!r}, {num_processes!r}, {process_id!r}")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  logging.info("Joined a run of %d processes as process %d: %d local of %d devices.",
               jax.process_count(), jax.process_index(), jax.local_device_count(),
               jax.device_count())
  return True


def is_primary() -> bool:
  """Whether this process writes the run's files (process 0; always true when alone)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name` (nothing to wait for when alone)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def primary_first(name: str, fn: Callable[[], T]) -> T:
  """`fn()` in every process, the primary's call finishing before the others start.

  For work that leaves a reusable result on a shared disk (the decoded-image cache): the
  other processes then load it instead of repeating it. Without a shared disk they simply
  do the work themselves afterwards.
  """
  if jax.process_count() == 1:
    return fn()
  result = fn() if is_primary() else None
  barrier(f"{name}:primary-done")
  if not is_primary():
    result = fn()
  return result

"""orbax checkpoints of the training state, kept as `last` and `best` in the workdir.

A checkpoint holds the whole `TrainState` (parameters, optimiser state, BatchNorm statistics,
EMA) plus a JSON record of the run (epoch, metrics, class names). It is always restored into
an abstract target built with `jax.eval_shape`, so optax's state keeps its types and every
array lands with the sharding the mesh wants.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

LAST, BEST = "last", "best"


def checkpoint_dir(workdir: str, which: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints", which)


def manager(workdir: str, which: str) -> ocp.CheckpointManager:
  """A manager keeping only the newest checkpoint of `which` ('last' or 'best')."""
  options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(checkpoint_dir(workdir, which), options=options,
                               item_names=("state", "meta"))


def save(mngr: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          meta=ocp.args.JsonSave(meta)), force=True)
  mngr.wait_until_finished()


def abstract_like(state: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a concrete or abstract state."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
      state)


def restore(mngr: ocp.CheckpointManager, abstract_state: Any, step: int | None = None):
  """(state, meta) of `step` (default: the newest), or None if the directory holds none."""
  step = mngr.latest_step() if step is None else step
  if step is None:
    return None
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
  return restored["state"], restored["meta"]


def restore_model_variables(mngr: ocp.CheckpointManager, abstract_variables: Any,
                            use_ema: bool, step: int | None = None):
  """({'params', 'batch_stats'} for evaluation, meta): the model's arrays alone.

  Inference needs neither the optimiser state nor its types, so the checkpoint is read
  without a state target (a run trained by an older optimiser layout still loads), and only
  the model's variables are kept, each checked against `abstract_variables` and placed with
  its sharding.
  """
  step = mngr.latest_step() if step is None else step
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(_whole_on_first_local_device(mngr, step)),
      meta=ocp.args.JsonRestore()))
  state = restored["state"]
  params = state["ema_params"] if (use_ema and state.get("ema_params")) else state["params"]
  variables = {"params": params, "batch_stats": state.get("batch_stats") or {}}
  expected = jax.tree.map(lambda a: a.shape, abstract_variables)
  found = jax.tree.map(lambda a: tuple(a.shape), variables)
  if jax.tree.structure(expected) != jax.tree.structure(found) or expected != found:
    raise ValueError(f"checkpoint {mngr.directory}/{step} does not fit the model of its "
                     "config.json (different architecture or number of classes)")
  variables = jax.tree.map(
      lambda a, t: jax.device_put(a, t.sharding) if getattr(t, "sharding", None) else a,
      variables, abstract_variables)
  return variables, restored["meta"]


def _whole_on_first_local_device(mngr: ocp.CheckpointManager, step: int) -> Any:
  """A restore target for every saved array, whole, on this process's first device.

  Built from the checkpoint's own metadata, so it fits whatever state layout was saved
  and whatever devices saved it (8 GPUs, a TPU slice, FSDP-split arrays): without a target,
  orbax would put each array back on the devices that wrote it.
  """
  reader = ocp.CheckpointManager(mngr.directory, item_handlers={
      "state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()})
  tree = reader.item_metadata(step)["state"]
  tree = getattr(tree, "tree", tree)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), tree)


def read_meta(workdir: str, which: str) -> dict | None:
  """The JSON record of a workdir's checkpoint without loading any array."""
  mngr = manager(workdir, which)
  step = mngr.latest_step()
  if step is None:
    return None
  return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

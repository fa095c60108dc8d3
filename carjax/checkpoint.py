"""Every orbax call of carjax: the training state's checkpoints (`last` and `best` in the
workdir), a model's variables read back from them, and converted pretrained weights.

A checkpoint holds the whole `TrainState` (parameters, optimiser state, BatchNorm statistics,
EMA) plus a JSON record of the run (epoch, metrics, class names). It is always restored into
an abstract target built with `jax.eval_shape`, so optax's state keeps its types and every
array lands with the sharding the mesh wants.

Integrity: `save` stores a sha256 of every array group (params, opt_state, ...) in the JSON
record, and `restore`/`restore_model_variables` recompute and compare them, so flipped bytes
or a truncated file fail loudly (`DamagedCheckpointError`) instead of training on garbage.
Saving a step that already exists replaces it (a resumed run re-saves the step a killed run
had written), and SIGINT/SIGTERM wait until a save is complete.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from carjax import jsonio
from carjax.errors import CheckpointError, NonFiniteError
from carjax import faults
from carjax import interrupts

LAST, BEST = "last", "best"


def checkpoint_dir(workdir: str, which: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints", which)


def manager(workdir: str, which: str) -> ocp.CheckpointManager:
  """A manager keeping only the newest checkpoint of `which` ('last' or 'best')."""
  options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(checkpoint_dir(workdir, which), options=options,
                               item_names=("state", "meta"))


class DamagedCheckpointError(CheckpointError):
  """A checkpoint step that cannot be read back or whose arrays fail their checksum."""


# Top-level groups of a checkpointed TrainState with their own checksum; the model's
# variables (the first three) are verified by inference too, which reads nothing else.
MODEL_GROUPS = ("params", "batch_stats", "ema_params")


def _group_of(state: Any, group: str):
  return state.get(group) if isinstance(state, dict) else getattr(state, group, None)


def checksums(state: Any, groups=None) -> dict[str, str | None]:
  """sha256 over (dtype, shape, bytes) of every leaf of each group, in tree order.

  A replicated array is hashed from this process's copy, so every process (and a later
  restore on any number of devices) computes the same digest. A group holding an array that
  is split across processes (FSDP over several hosts) cannot be hashed by one process: its
  entry is None, and `verify` skips it.
  """
  if groups is None:
    groups = [g for g in ("step", "params", "opt_state", "batch_stats", "ema_params")
              if _group_of(state, g) is not None]
  out = {}
  for group in groups:
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(_group_of(state, group)):
      digest.update(f"{np.dtype(leaf.dtype).str}{tuple(np.shape(leaf))}".encode())
      if getattr(leaf, "is_fully_addressable", True):
        data = jax.device_get(leaf)
      elif leaf.is_fully_replicated:
        data = np.asarray(leaf.addressable_data(0))
      else:
        digest = None
        break
      digest.update(np.ascontiguousarray(data).tobytes())
    out[group] = None if digest is None else digest.hexdigest()
  return out


def verify(state: Any, meta: dict, where: str, groups=None) -> None:
  """Raises `DamagedCheckpointError` when `state` does not match the checksums in `meta`."""
  stored = meta.get("checksums")
  if not stored:
    return  # Saved before checksums were recorded.
  groups = [g for g in (groups or stored) if stored.get(g) is not None]
  found = checksums(state, groups)
  # None: this process cannot hash the group (split across processes), so it cannot check it.
  bad = [g for g in groups if found[g] is not None and found[g] != stored[g]]
  if bad:
    raise DamagedCheckpointError(f"checkpoint {where} is damaged: its {', '.join(bad)} "
                                 "differ from the checksums recorded when it was saved")


def save(mngr: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
  """Saves `state` with `meta` (plus checksums) as `step`, replacing an existing `step`."""
  which = os.path.basename(str(mngr.directory))
  meta = jsonio.finite_or_none(dict(meta, checksums=checksums(state)))
  with interrupts.deferred(f"the '{which}' checkpoint save"), faults.saving(which):
    faults.point(f"save_{which}_begin")
    mngr.reload()
    aside = None
    if step in mngr.all_steps():
      # Replacing a step: the old one stays on disk, beside the manager's folder, until the
      # new one is complete; `recover_replaced` puts it back after a kill in between.
      aside = _replaced_path(mngr, step)
      if os.path.exists(aside):
        shutil.rmtree(aside)
      os.rename(os.path.join(str(mngr.directory), str(step)), aside)
      mngr.reload()
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            meta=ocp.args.JsonSave(meta)), force=True)
    mngr.wait_until_finished()
    if aside:
      shutil.rmtree(aside)


def _replaced_path(mngr: ocp.CheckpointManager, step: int) -> str:
  return f"{mngr.directory}.replaced-{step}"


def recover_replaced(mngr: ocp.CheckpointManager) -> None:
  """Finishes a replacement of a step that a kill interrupted: the old step goes back if
  the new one was not completed, else the old copy is removed."""
  mngr.reload()
  for aside in glob.glob(f"{mngr.directory}.replaced-*"):
    step = int(aside.rsplit("-", 1)[1])
    if step in mngr.all_steps():
      shutil.rmtree(aside)
    else:
      os.rename(aside, os.path.join(str(mngr.directory), str(step)))
  mngr.reload()


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
  where = f"{mngr.directory}/{step}"
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
  except Exception as e:  # pylint: disable=broad-except
    raise DamagedCheckpointError(f"checkpoint {where} cannot be read: "
                                 f"{_first_line(e)}") from e
  meta = dict(restored["meta"])
  verify(restored["state"], meta, where)
  meta.pop("checksums", None)
  return restored["state"], meta


def _first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0] if text else ''}"


def restore_model_variables(mngr: ocp.CheckpointManager, abstract_variables: Any,
                            use_ema: bool, step: int | None = None):
  """({'params', 'batch_stats'} for evaluation, meta): the model's arrays alone.

  Inference needs neither the optimiser state nor its types, so the checkpoint is read
  without a state target (a run trained by an older optimiser layout still loads), and only
  the model's variables are kept, each checked against `abstract_variables` and placed with
  its sharding.
  """
  step = mngr.latest_step() if step is None else step
  where = f"{mngr.directory}/{step}"
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_whole_on_first_local_device(mngr, step)),
        meta=ocp.args.JsonRestore()))
  except Exception as e:  # pylint: disable=broad-except
    raise DamagedCheckpointError(f"checkpoint {where} cannot be read: "
                                 f"{_first_line(e)}") from e
  state = restored["state"]
  meta = dict(restored["meta"])
  verify(state, meta, where, MODEL_GROUPS)
  meta.pop("checksums", None)
  params = state["ema_params"] if (use_ema and state.get("ema_params")) else state["params"]
  variables = {"params": params, "batch_stats": state.get("batch_stats") or {}}
  expected = jax.tree.map(lambda a: a.shape, abstract_variables)
  found = jax.tree.map(lambda a: tuple(a.shape), variables)
  if jax.tree.structure(expected) != jax.tree.structure(found) or expected != found:
    raise CheckpointError(f"checkpoint {mngr.directory}/{step} does not fit the model of "
                          "its config.json (different architecture or number of classes)")
  if not all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(variables)
             if np.issubdtype(np.asarray(x).dtype, np.inexact)):
    raise NonFiniteError(f"checkpoint {where} holds NaN or infinite weights: the run that "
                         "wrote it diverged; retrain with a lower learning rate")
  variables = jax.tree.map(
      lambda a, t: jax.device_put(a, t.sharding) if getattr(t, "sharding", None) else a,
      variables, abstract_variables)
  return variables, meta


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


def saved_state_metadata(step_dir: str) -> Any:
  """The array metadata (shapes, dtypes) of the state saved in a step folder, without reading
  any array."""
  return ocp.StandardCheckpointer().metadata(f"{step_dir}/state").item_metadata


def read_meta(workdir: str, which: str) -> dict | None:
  """The JSON record of a workdir's checkpoint without loading any array."""
  mngr = manager(workdir, which)
  step = mngr.latest_step()
  if step is None:
    return None
  return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


# --- converted pretrained weights -------------------------------------------------------------
# Layout of a converted-weights directory:
#   <directory>/variables/        orbax StandardCheckpointer: {'params', 'batch_stats'}
#   <directory>/conventions.json  how to build and feed the model: `model` ('efficientnet'),
#     `variant`, `num_classes`, `padding`, `bn_epsilon`, `bn_momentum`, `activation`, `se`,
#     `resolution`, `input_mean` / `input_std` (per RGB channel, 0..255 scale: feed
#     `(pixels - mean) / std`), `class_names` (list or None), `source`, `source_file`,
#     `source_sha256`, and source-specific notes.

CONVENTIONS_FILE = "conventions.json"
VARIABLES_DIR = "variables"


def sha256_of(path: str | os.PathLike) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def save_converted(directory: str | os.PathLike, variables: Any,
                   conventions: dict[str, Any]) -> None:
  """Writes variables (orbax) and conventions (JSON); overwrites a previous save."""
  directory = os.path.abspath(os.fspath(directory))
  os.makedirs(directory, exist_ok=True)
  variables = jax.tree.map(np.asarray, variables)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.join(directory, VARIABLES_DIR), variables, force=True)
  with open(os.path.join(directory, CONVENTIONS_FILE), "w") as f:
    json.dump(conventions, f, indent=1)
    f.write("\n")


def has_converted(directory: str | os.PathLike) -> bool:
  """Whether `directory` holds converted weights (their conventions file)."""
  return os.path.isfile(os.path.join(os.fspath(directory), CONVENTIONS_FILE))


def load_converted(directory: str | os.PathLike) -> tuple[dict, dict[str, Any]]:
  """Reads what `save_converted` wrote: (variables of numpy arrays, conventions)."""
  directory = os.path.abspath(os.fspath(directory))
  with open(os.path.join(directory, CONVENTIONS_FILE)) as f:
    conventions = json.load(f)
  with ocp.StandardCheckpointer() as checkpointer:
    variables = checkpointer.restore(os.path.join(directory, VARIABLES_DIR))
  return jax.tree.map(np.asarray, variables), conventions

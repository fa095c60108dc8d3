"""One run per workdir at a time, and a rerun only continues the run that is there.

`WorkdirLock` holds an exclusive `flock` on `<workdir>/.carjax.lock` for the whole run: a second
process on the same workdir stops at once naming the holder's pid. The kernel drops the lock
when its holder dies, even by SIGKILL, so a stale lock never blocks a rerun.

`check_rerun` compares what a rerun would train (config, class names, model shapes) with the
run already in the workdir *before anything is written*, and refuses a mismatch listing every
difference. Options that change neither the model nor the data nor the optimisation path
(`RESUMABLE_CHANGES`: length, logging, evaluation batch size, checkpoint frequency, cache and
worker settings) may change; they are listed in a warning.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from typing import Any, Mapping

from absl import logging
import ml_collections

from carjax.errors import WorkdirLockedError, WorkdirMismatchError
from carjax import checkpoint as ckpt
from carjax import workdir as workdir_lib

LOCK_FILE = ".carjax.lock"

# Fields a rerun may change: they decide how long the run is, what it logs and how often it
# saves, not what a given step computes. train.num_epochs changes the length (and with it the
# learning-rate schedule's end): training longer than first planned is the usual reason to
# rerun. eval.every_epochs changes which epochs are compared for `best`. Anything else (the
# model, the optimiser and its schedule, augmentation, the seed, batch size, image size,
# splits) would make the resumed run a different experiment than the checkpoint's.
# Options added after runs were recorded, each with the value under which a run made before
# it trained (the feature off): a config.json without the field is read as having it.
# Only the fields the config at hand has count.
ADDED_OPTIONS = {
    "data.augment.cutmix_prob": 0.0, "data.augment.cutmix_alpha": 1.0,
    "data.augment.mixup_prob": 0.0, "data.augment.mixup_alpha": 0.2,
    "data.aux_labels_csv": "", "data.aux_labels_key": "relpath",
    "data.aux_labels_column": "model", "train.aux_loss_weight": 0.5,
    "train.layer_lr_decay": 1.0, "eval.image_size": [], "train.teacher_workdir": "",
    "train.distill_weight": 0.5, "train.distill_temperature": 2.0,
    "train.loss": "cross_entropy", "train.cosine_ce_weight": 0.1, "model.head_type": "linear",
}

RESUMABLE_CHANGES = frozenset({
    "train.num_epochs", "train.log_every_steps", "eval.batch_size", "eval.every_epochs",
    "checkpoint.every_steps", "checkpoint.every_minutes", "data.cache_dir",
    "data.num_workers", "data.tfds_data_dir", "data.tfds_manual_dir", "init.resume_from",
    # The data may move; its class names are compared, and the model's shapes.
    "data.source",
    # How the run is laid over devices: a checkpoint restores onto any mesh (issue 14), and
    # the steps compute the same global batch whatever the layout (within float rounding).
    "mesh.fsdp", "mesh.fsdp_min_size",
})


class WorkdirLock:
  """Context manager: an exclusive lock on a workdir, released on exit or process death."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, LOCK_FILE)
    self.enabled = enabled
    self._file = None

  def __enter__(self) -> "WorkdirLock":
    os.makedirs(self.workdir, exist_ok=True)
    if not self.enabled:
      return self
    f = open(self.path, "a+")
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      f.seek(0)
      holder = f.read().strip() or "unknown pid"
      f.close()
      raise WorkdirLockedError(
          f"workdir {self.workdir} is in use by another run ({holder}); wait for it to end "
          "or stop it, or choose another --workdir") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}")
    f.flush()
    self._file = f
    return self

  def __exit__(self, *exc) -> None:
    if self._file is not None:
      self._file.truncate(0)
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None


def flat_config(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
  """'section.field' -> JSON value (tuples and lists alike)."""
  tree = json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") \
      else config
  out = {}

  def walk(node, prefix):
    for k, v in node.items():
      if isinstance(v, dict):
        walk(v, f"{prefix}{k}.")
      else:
        out[f"{prefix}{k}"] = v
  walk(tree, "")
  return out


class _Absent:
  """A field one of two configs does not have."""

  def __repr__(self) -> str:
    return "<absent>"


_ABSENT = _Absent()


def recorded_config(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
  """A run's saved flat config as read by this carjax: an option added since the run was made
  (one the flat `current` config has) takes the value the run trained under."""
  return {**{k: v for k, v in ADDED_OPTIONS.items() if k in current}, **saved}


def changed_fields(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
  """The flat fields whose values differ, a field only one side has included."""
  return [k for k in sorted(set(before) | set(now))
          if before.get(k, _ABSENT) != now.get(k, _ABSENT)]


def _checkpoint_shapes(workdir: str) -> tuple[str, dict] | None:
  """(checkpoint path, {'params/..': shape}) of the newest step of `last`, else `best`."""
  for which in (ckpt.LAST, ckpt.BEST):
    mngr = ckpt.manager(workdir, which)
    step = mngr.latest_step()
    if step is None:
      continue
    where = f"{mngr.directory}/{step}"
    try:
      tree = ckpt.saved_state_metadata(where)
      return where, {k: v for group in ("params", "batch_stats")
                     for k, v in _shapes(tree.get(group), group).items()}
    except Exception:  # pylint: disable=broad-except
      return None  # Unreadable: the restore reports it (and falls back).
  return None


def _shapes(tree, prefix: str) -> dict[str, tuple]:
  """{'prefix/a/b': shape} of a nested mapping of arrays (or array metadata)."""
  if tree is None:
    return {}
  if isinstance(tree, Mapping):
    return {k: v for key, sub in tree.items() for k, v in _shapes(sub, f"{prefix}/{key}").items()}
  return {prefix: tuple(tree.shape)}


def _model_differences(workdir: str, abstract_variables) -> list[str]:
  found = _checkpoint_shapes(workdir)
  if found is None:
    return []
  where, stored = found
  wanted = {k: v for group in ("params", "batch_stats")
            for k, v in _shapes(abstract_variables.get(group), group).items()}
  diffs = [f"model {k}: checkpoint {stored.get(k, 'absent')}, now {wanted.get(k, 'absent')}"
           for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)]
  if len(diffs) > 6:
    diffs = diffs[:6] + [f"... and {len(diffs) - 6} more arrays differ (in {where})"]
  return diffs


def has_checkpoint(workdir: str) -> bool:
  return any(ckpt.manager(workdir, w).latest_step() is not None
             for w in (ckpt.LAST, ckpt.BEST)
             if os.path.isdir(ckpt.checkpoint_dir(workdir, w)))


def _names_difference(what: str, before, now) -> list[str]:
  """['<what>: 3 -> 4, added [...]'] when two class-name lists differ, else []."""
  if list(before) == list(now):
    return []
  gone = [c for c in before if c not in now]
  new = [c for c in now if c not in before]
  return [f"{what}: {len(before)} -> {len(now)}"
          + (f", removed {gone}" if gone else "") + (f", added {new}" if new else "")
          + ("" if gone or new else ", same names in another order")]


def check_rerun(workdir: str, config: ml_collections.ConfigDict, class_names,
                abstract_variables, aux_class_names=()) -> None:
  """Refuses (WorkdirMismatchError) a rerun that would continue another run's checkpoints."""
  if not has_checkpoint(workdir):
    return
  problems = []
  config_path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
  if os.path.exists(config_path):
    now = flat_config(config)
    with open(config_path) as f:
      before = recorded_config(flat_config(json.load(f)), now)
    changed = changed_fields(before, now)
    values = lambda k: f"{before.get(k, _ABSENT)!r} -> {now.get(k, _ABSENT)!r}"
    allowed = [k for k in changed if k in RESUMABLE_CHANGES]
    problems += [f"config.{k}: {values(k)}" for k in changed if k not in RESUMABLE_CHANGES]
    if allowed:
      logging.warning("Resuming %s with changed %s.", workdir,
                      ", ".join(f"config.{k} ({values(k)})" for k in allowed))
  if os.path.exists(os.path.join(workdir, workdir_lib.CLASS_NAMES_FILE)):
    problems += _names_difference("classes", workdir_lib.read_class_names(workdir),
                                  class_names)
  # Absent for a run without an auxiliary head (then the model's shapes tell a new one).
  if os.path.exists(os.path.join(workdir, workdir_lib.AUX_CLASS_NAMES_FILE)):
    problems += _names_difference("auxiliary classes",
                                  workdir_lib.read_aux_class_names(workdir), aux_class_names)
  problems += _model_differences(workdir, abstract_variables)
  if problems:
    raise WorkdirMismatchError(
        f"--workdir={workdir} holds a run that differs from this one in: "
        + "; ".join(problems) + ". Nothing was changed; use a new --workdir (with "
        "--config.init.resume_from to start from that run's weights) or the run's own config")

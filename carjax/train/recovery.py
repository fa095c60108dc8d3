"""Finding the newest intact checkpoint of a workdir, and keeping `best` consistent with it.

A resumed run restores the newest `last` step that reads back and passes its checksums; a
damaged one is moved to `checkpoints/damaged/` (never deleted) with a one-line warning, and
the run falls back to an older `last` step, then to `best`. The `last` checkpoint's record
names the best step and value (`best_step`, `best_value`), so `reconcile_best` can tell a
`best` save that a kill interrupted (it is redone from the restored state, the same arrays)
from a best checkpoint that was deleted or damaged (the next evaluated epoch becomes best).
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from absl import logging

from carjax import checkpoint as ckpt


def quarantine(workdir: str, which: str, step: int) -> str:
  """Moves a damaged step folder to checkpoints/damaged/ and returns its new path."""
  source = os.path.join(ckpt.checkpoint_dir(workdir, which), str(step))
  target_dir = os.path.join(os.path.dirname(ckpt.checkpoint_dir(workdir, which)), "damaged")
  os.makedirs(target_dir, exist_ok=True)
  target = os.path.join(target_dir, f"{which}-{step}-{time.strftime('%Y%m%dT%H%M%S')}")
  if os.path.exists(source):
    shutil.move(source, target)
  return target


def restore_newest_intact(workdir: str, abstract: Any):
  """(state, meta) of the newest intact `last` step, else of `best`; None if there is none."""
  for which in (ckpt.LAST, ckpt.BEST):
    mngr = ckpt.manager(workdir, which)
    ckpt.recover_replaced(mngr)
    for step in sorted(mngr.all_steps(), reverse=True):
      try:
        state, meta = ckpt.restore(mngr, abstract, step)
      except ckpt.DamagedCheckpointError as e:
        moved = quarantine(workdir, which, step)
        logging.warning("%s; moved it to %s and falling back to an older checkpoint.", e, moved)
        mngr = ckpt.manager(workdir, which)
        continue
      if which == ckpt.BEST:
        logging.warning("No intact 'last' checkpoint in %s: resuming from the 'best' one at "
                        "step %d.", workdir, step)
        ckpt.save(ckpt.manager(workdir, ckpt.LAST), step, state, meta)
      return state, meta
  return None


def reconcile_best(workdir: str, state: Any, meta: dict, abstract: Any
                   ) -> tuple[float | None, int | None]:
  """(best value, best step) a resumed run continues with, repairing `best` if it can."""
  best_value, best_step = meta.get("best_value"), meta.get("best_step")
  mngr = ckpt.manager(workdir, ckpt.BEST)
  steps = mngr.all_steps()
  if best_step is None:
    if best_value is None or not steps:
      return None, None
    best_step = max(steps)  # A record written before `best_step` existed.
  step = int(meta["step"])
  if best_step in steps:
    try:
      ckpt.restore(mngr, abstract, best_step)
      return best_value, best_step
    except ckpt.DamagedCheckpointError as e:
      moved = quarantine(workdir, ckpt.BEST, best_step)
      logging.warning("%s; moved it to %s: the next evaluated epoch becomes best.", e, moved)
      return None, None
  if best_step == step:
    logging.info("Completing the interrupted save of the best checkpoint (step %d).", step)
    ckpt.save(mngr, step, state, meta)
    return best_value, best_step
  logging.warning("The best checkpoint (step %d) is missing from %s: the next evaluated epoch "
                  "becomes best.", best_step, ckpt.checkpoint_dir(workdir, ckpt.BEST))
  return None, None

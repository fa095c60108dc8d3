"""Fault injection at named points of a run, for the reliability tests.

`CARJAX_FAULT="POINT[@N]:ACTION[,...]"` makes the N-th (default first) time the run reaches
POINT send ACTION to its own process: SIGINT, SIGTERM or SIGKILL, or `exit` (`os._exit(3)`:
an abrupt death like a lost machine). Points: `step_K` (before training step K, counted
from 0), `eval` (inside an epoch's evaluation, after its first batch), `save_last_begin`,
`save_best_begin` (before anything is written), `save_last_finalize`, `save_best_finalize`
(every array written to orbax's temporary folder, before its rename to the step folder).
Unset, every point is a dictionary lookup and nothing else.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import time

from absl import logging

ENV = "CARJAX_FAULT"
_hits: collections.Counter = collections.Counter()
_current_save: list[str] = []
_orbax_hooked = False


def reset() -> None:
  """Counts points from zero again (one run per process, or a new run in the same one)."""
  _hits.clear()
  if os.environ.get(ENV):
    _hook_orbax_finalize()


def point(name: str) -> None:
  spec = os.environ.get(ENV)
  if not spec:
    return
  _hits[name] += 1
  for item in spec.split(","):
    where, _, action = item.strip().partition(":")
    point_name, _, nth = where.partition("@")
    if point_name == name and _hits[name] == int(nth or 1):
      _fire(action, name)


def _fire(action: str, name: str) -> None:
  logging.warning("Fault injection (%s): %s at %s.", ENV, action, name)
  if action == "exit":
    os._exit(3)  # pylint: disable=protected-access
  os.kill(os.getpid(), getattr(signal, action))
  if action == "SIGKILL":
    time.sleep(60)  # Never returns: the kernel ends the process.


@contextlib.contextmanager
def saving(which: str):
  """Names the checkpoint being saved, for the `save_*_finalize` points."""
  _current_save.append(which)
  try:
    yield
  finally:
    _current_save.pop()


def _hook_orbax_finalize() -> None:
  """Wraps orbax's atomic rename so `save_*_finalize` fires between writing and renaming."""
  global _orbax_hooked
  if _orbax_hooked:
    return
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top
  original = atomicity.AtomicRenameTemporaryPath.finalize

  async def finalize(self, *args, **kwargs):
    if _current_save and self.get().parent.name == _current_save[-1]:
      point(f"save_{_current_save[-1]}_finalize")
    return await original(self, *args, **kwargs)

  atomicity.AtomicRenameTemporaryPath.finalize = finalize
  _orbax_hooked = True

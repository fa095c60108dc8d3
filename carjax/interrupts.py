"""Stopping a run cleanly: SIGTERM behaves like Ctrl-C, and neither tears a checkpoint save.

`terminate_as_interrupt()` makes SIGTERM (what `kill`, batch schedulers and container
runtimes send) raise `Terminated`, a KeyboardInterrupt, so one handler saves the run for both.
`deferred()` holds SIGINT and SIGTERM while a checkpoint is written and raises them when the
block ends. SIGKILL cannot be caught; checkpoints are atomic (orbax renames a finished
temporary folder) and restores verify and fall back, so a SIGKILLed run resumes as well.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from absl import logging


class Terminated(KeyboardInterrupt):
  """A KeyboardInterrupt raised by a signal other than SIGINT (e.g. SIGTERM)."""

  def __init__(self, signum: int):
    super().__init__(f"stopped by {signal.Signals(signum).name}")
    self.signum = signum


def _raise_terminated(signum, frame):
  del frame
  raise Terminated(signum)


def _in_main_thread() -> bool:
  return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def terminate_as_interrupt():
  """Within the block, SIGTERM raises `Terminated` in the main thread (as Ctrl-C does)."""
  if not _in_main_thread():
    yield
    return
  previous = signal.signal(signal.SIGTERM, _raise_terminated)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def deferred(what: str):
  """Holds SIGINT/SIGTERM until `what` (e.g. 'the checkpoint save') is done, then re-raises
  the signal, so the handler outside the block (Ctrl-C's KeyboardInterrupt, `Terminated`, or
  an enclosing `deferred`) acts on it."""
  if not _in_main_thread():
    yield
    return
  received: list[int] = []

  def hold(signum, frame):
    del frame
    if not received:
      logging.warning("%s received: finishing %s first.", signal.Signals(signum).name, what)
    received.append(signum)

  previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
  failed = False
  try:
    yield
  except BaseException:
    failed = True
    raise
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    if received and not failed:
      signal.raise_signal(received[0])

"""The timing loop shared by every stack: warm-up steps, then timed repeats of `steps` steps."""

from __future__ import annotations

import time
from typing import Callable


class Unavailable(Exception):
  """This stack has no implementation of this model (reported, not an error)."""


def timed_repeats(step: Callable[[], object], sync: Callable[[object], None], *,
                  warmup: int, repeats: int, steps: int) -> list[float]:
  """Seconds of each of `repeats` runs of `steps` calls of `step`, after `warmup` calls.

  `sync(result)` waits until the last step's result is computed (asynchronous stacks).
  """
  result = None
  for _ in range(warmup):
    result = step()
  if result is not None:
    sync(result)
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      result = step()
    sync(result)
    seconds.append(time.perf_counter() - start)
  return seconds


def sample(seconds: list[float], images_per_step: int, steps: int) -> dict:
  """A raw measurement record: each repeat's seconds and the images it processed."""
  return {"seconds": seconds, "steps_per_repeat": steps, "images_per_step": images_per_step,
          "images_per_repeat": images_per_step * steps}

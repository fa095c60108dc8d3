"""The training progress line: one tqdm bar per epoch, or a logged line where there is no
terminal."""

from __future__ import annotations

import sys
import time

from absl import logging
import tqdm


def format_duration(seconds: float) -> str:
  """'1:02:03' (h:mm:ss), rounded to the second."""
  seconds = int(round(max(seconds, 0.0)))
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressBar:
  """One tqdm line per epoch in the style of Keras: loss, accuracy, images/s and ETA.

  Where stderr is not a terminal (nohup, SLURM, CI logs) the bar is off and each update logs
  one line instead, with the epoch's and the whole run's ETA from this epoch's step rate
  (training steps only: evaluation time is not counted).
  """

  def __init__(self, epoch: int, num_epochs: int, start: int, total: int):
    self._bar = tqdm.tqdm(total=total, initial=start, desc=f"Epoch {epoch}/{num_epochs}",
                          unit="step", dynamic_ncols=True, file=sys.stderr,
                          disable=None)  # None: off when stderr is not a terminal.
    self._done = start
    self._epoch, self._num_epochs, self._total = epoch, num_epochs, total
    self._start_time, self._start_done = time.perf_counter(), start

  def eta_seconds(self, done: int) -> tuple[float, float] | None:
    """(seconds left in this epoch, in the run) at `done` steps; None before the first step."""
    steps, elapsed = done - self._start_done, time.perf_counter() - self._start_time
    if steps <= 0 or elapsed <= 0:
      return None
    per_step = elapsed / steps
    epoch_left = (self._total - done) * per_step
    return epoch_left, epoch_left + (self._num_epochs - self._epoch) * self._total * per_step

  def update(self, done: int, **values: float) -> None:
    self._bar.update(done - self._done)
    self._done = done
    self._bar.set_postfix(loss=f"{values['loss']:.4f}", acc=f"{values['accuracy']:.4f}",
                          img_s=f"{values['images_per_s']:.1f}")
    if self._bar.disable:
      eta = self.eta_seconds(done)
      eta_text = (f", ETA epoch {format_duration(eta[0])}, run {format_duration(eta[1])}"
                  if eta else "")
      logging.info("Epoch %d/%d step %d/%d: loss %.4f, accuracy %.4f, %.1f images/s%s",
                   self._epoch, self._num_epochs, done, self._total, values["loss"],
                   values["accuracy"], values["images_per_s"], eta_text)

  def close(self) -> None:
    self._bar.close()

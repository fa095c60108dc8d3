"""Training progress in a log that is not a terminal: a line with images/s and the ETA."""

from __future__ import annotations

import logging

from carjax.train import progress


def test_non_terminal_progress_line_has_images_per_second_and_eta(monkeypatch, caplog):
  clock = iter([100.0, 110.0, 120.0])  # Constructed at 100 s; updates at 110 s and 120 s.
  monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
  monkeypatch.setattr(progress.sys, "stderr", open("/dev/null", "w"))  # Not a terminal.
  bar = progress.ProgressBar(epoch=2, num_epochs=3, start=10, total=50)
  with caplog.at_level(logging.INFO, logger="absl"):  # Whatever verbosity earlier tests left.
    bar.update(20, loss=1.5, accuracy=0.25, images_per_s=12.5)
    bar.update(30, loss=1.25, accuracy=0.5, images_per_s=12.0)
  bar.close()
  lines = [r.getMessage() for r in caplog.records if "Epoch 2/3" in r.getMessage()]
  # 10 steps in 10 s: 30 steps left in this epoch, then one more epoch of 50 steps.
  assert lines[0] == ("Epoch 2/3 step 20/50: loss 1.5000, accuracy 0.2500, 12.5 images/s, "
                      "ETA epoch 0:00:30, run 0:01:20")
  # 20 steps in 20 s: 20 + 50 left.
  assert lines[1].endswith("12.0 images/s, ETA epoch 0:00:20, run 0:01:10")


def test_format_duration():
  assert progress.format_duration(3723.4) == "1:02:03"
  assert progress.format_duration(-5) == "0:00:00"

"""What a run reads and writes around the training loop: data, run files, metrics, progress."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any

from absl import logging
import ml_collections
import numpy as np
import tqdm

from carjax import jsonio
from carjax.data import cache as cache_lib
from carjax.data import dev_split
from carjax.data import sources
from carjax.errors import ConfigError, MissingPathError


@dataclasses.dataclass
class RunData:
  """The decoded train split of a run and the split its checkpoints are chosen on."""

  class_names: tuple[str, ...]
  train: Any  # carjax.data.cache.CachedSplit
  eval: Any  # The `selection_split`: dev, or else the eval split.


NO_DATA_HELP = """\
No training data given: set --config.data.source.

  * An image folder:  --config.data.source=folder:/path/to/cars  holding
    /path/to/cars/{train,val}/<Make>/*.jpg (or /path/to/cars/<Make>/*.jpg, split for you).
  * Stanford Cars, as downloaded from Kaggle, Hugging Face or the original devkit: first run
      python -m launch.prepare_data --input=/path/to/download --output=/path/to/cars
    then train with --config.data.source=folder:/path/to/cars  (README.md, "Getting the data").
  * A TensorFlow Datasets dataset:  --config.data.source=tfds:NAME
"""


def open_configured_source(data_cfg: ml_collections.ConfigDict):
  """The data source named by `config.data.source`, with the config's split options (and
  its train split divided into train and dev when `config.data.dev_fraction` > 0)."""
  source = sources.open_source(
      data_cfg.source, split_seed=data_cfg.split_seed, val_fraction=data_cfg.val_fraction,
      test_fraction=data_cfg.test_fraction,
      tfds_data_dir=data_cfg.get("tfds_data_dir") or None,
      tfds_manual_dir=data_cfg.get("tfds_manual_dir") or None)
  if data_cfg.get("dev_fraction", 0.0):
    source = dev_split.DevCarvedSource(source, dev_fraction=data_cfg.dev_fraction,
                                       seed=data_cfg.split_seed,
                                       train_split=data_cfg.train_split)
  return source


def selection_split(data_cfg: ml_collections.ConfigDict) -> str:
  """The split the per-epoch evaluations (and so the `best` checkpoint) are made on: "dev"
  with a dev split, else the eval split itself (which then both chooses and scores)."""
  return dev_split.DEV if data_cfg.get("dev_fraction", 0.0) else data_cfg.eval_split


def load_data(config: ml_collections.ConfigDict, source=None) -> RunData:
  """Decodes (or loads cached) the train and eval splits of `source` (default: opens
  `config.data.source`)."""
  data_cfg = config.data
  if not data_cfg.source:
    raise ConfigError(NO_DATA_HELP)
  source = source or open_configured_source(data_cfg)
  load = lambda split: load_split(data_cfg, source, split)
  train = load(data_cfg.train_split)
  evaluation = load(selection_split(data_cfg))
  for split, part in ((data_cfg.train_split, train), (selection_split(data_cfg), evaluation)):
    logging.info("%s: %d images decoded, %d unreadable skipped.", split, len(part.labels),
                 len(part.failures))
  return RunData(tuple(source.class_names), train, evaluation)


def load_split(data_cfg: ml_collections.ConfigDict, source, split: str):
  """One split of `source` decoded at the config's size (cached; memory-mapped from disk as
  batches need it, since a split may exceed host RAM)."""
  cache_dir = os.path.expanduser(data_cfg.cache_dir) if data_cfg.cache_dir else None
  return cache_lib.load_split(
      source, split, image_size=data_cfg.image_size, resize_mode=data_cfg.resize_mode,
      cache_dir=cache_dir, num_workers=data_cfg.num_workers or None, progress=True,
      mmap=True)


def write_run_files(config: ml_collections.ConfigDict, workdir: str, class_names, data: RunData):
  """config.json, class_names.json and the list of unreadable files, in the workdir."""
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  with open(os.path.join(workdir, "class_names.json"), "w") as f:
    json.dump(list(class_names), f, indent=2)
  failures = [{"split": s, "file": n, "reason": r}
              for s, part in (("train", data.train), ("eval", data.eval))
              for n, r in part.failures]
  with open(os.path.join(workdir, "unreadable_files.json"), "w") as f:
    json.dump(failures, f, indent=2)


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir's run was trained with."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise MissingPathError(f"{path} not found: is {workdir!r} a carjax training workdir?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


class MetricWriter:
  """Appends metrics to `metrics.jsonl` and to TensorBoard event files under `tensorboard/`."""

  def __init__(self, workdir: str):
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, split: str, values: dict[str, Any]) -> None:
    scalars = {k: float(v) for k, v in values.items() if isinstance(v, (int, float, np.number))}
    self._jsonl.write(jsonio.dumps({"step": int(step), "split": split, **scalars}) + "\n")
    self._jsonl.flush()
    for k, v in scalars.items():
      self._tb.add_scalar(f"{split}/{k}", v, step)

  def close(self) -> None:
    self._jsonl.close()
    self._tb.close()


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

"""A run's data as its config names it: the source, and its decoded train and eval splits."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from absl import logging
import ml_collections
import numpy as np

from carjax.data import aux_labels as aux_lib
from carjax.data import cache as cache_lib
from carjax.data import decode
from carjax.data import dev_split
from carjax.data import sources
from carjax.errors import ConfigError


@dataclasses.dataclass
class RunData:
  """The decoded train split of a run and the split its checkpoints are chosen on; with
  `config.data.aux_labels_csv`, the auxiliary classes and each training image's label; with
  a teacher (`config.train.teacher_workdir`), its logits for each training image."""

  class_names: tuple[str, ...]
  train: Any  # carjax.data.cache.CachedSplit
  eval: Any  # The `selection_split`: dev, or else the eval split.
  aux_class_names: tuple[str, ...] = ()
  train_aux_labels: np.ndarray | None = None  # int32, aligned with `train.images`.
  train_teacher_logits: np.ndarray | None = None  # float32 [N, K], aligned alike.

  def train_targets(self) -> dict[str, np.ndarray]:
    """The per-image training targets besides the make, by the batch key they go under."""
    targets = {"aux_label": self.train_aux_labels,
               "teacher_logits": self.train_teacher_logits}
    return {k: v for k, v in targets.items() if v is not None}

  def unreadable_files(self) -> list[dict[str, str]]:
    """{'split', 'file', 'reason'} of every image the loader skipped."""
    return [{"split": s, "file": n, "reason": r}
            for s, part in (("train", self.train), ("eval", self.eval))
            for n, r in part.failures]


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


def eval_image_hw(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(height, width) the run is evaluated and predicts at: `config.eval.image_size`, or the
  training size `config.data.image_size` when that is empty (the default). The networks are
  convolutional, so a model trained low may be tested high ("train low, test high")."""
  return decode.image_hw(config.eval.get("image_size") or config.data.image_size)


def load_data(config: ml_collections.ConfigDict, source=None,
              aux: aux_lib.AuxLabels | None = None) -> RunData:
  """Decodes (or loads cached) the train and eval splits of `source` (default: opens
  `config.data.source`), with the train split's auxiliary labels (`aux`, default: read as
  `config.data.aux_labels_csv` says)."""
  data_cfg = config.data
  if not data_cfg.source:
    raise ConfigError(NO_DATA_HELP)
  source = source or open_configured_source(data_cfg)
  if aux is None:
    aux = aux_lib.for_train_split(data_cfg, source)
  train = load_split(data_cfg, source, data_cfg.train_split)
  evaluation = load_split(data_cfg, source, selection_split(data_cfg),
                          image_size=eval_image_hw(config))
  for split, part in ((data_cfg.train_split, train), (selection_split(data_cfg), evaluation)):
    logging.info("%s: %d images decoded, %d unreadable skipped.", split, len(part.labels),
                 len(part.failures))
  if aux is None:
    return RunData(tuple(source.class_names), train, evaluation)
  return RunData(tuple(source.class_names), train, evaluation, aux.class_names,
                 aux.labels_of(train.names))


def load_split(data_cfg: ml_collections.ConfigDict, source, split: str, image_size=None):
  """One split of `source` decoded at `image_size` (default: the config's training size;
  cached; memory-mapped from disk as batches need it, since a split may exceed host RAM)."""
  cache_dir = os.path.expanduser(data_cfg.cache_dir) if data_cfg.cache_dir else None
  return cache_lib.load_split(
      source, split, image_size=image_size or data_cfg.image_size,
      resize_mode=data_cfg.resize_mode, cache_dir=cache_dir,
      num_workers=data_cfg.num_workers or None, progress=True, mmap=True)

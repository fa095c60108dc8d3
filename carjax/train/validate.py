"""Every config value checked before any data is read, each failure naming its option.

`validate_config(config)` runs first in `carjax.train.loop.train`: a typo in `best_metric`, a zero
batch size or a learning rate of 1e6 fails in a second with a one-line `ConfigError`, not
after an epoch. `check_data_source(source, config)` then checks what can be known from a
source's listing before decoding (split names, at least two classes, no empty split), and
`check_decoded(data, config)` what only decoding tells (every image of a split unreadable).
"""

from __future__ import annotations

import math
import numbers
import os
import re
from typing import Any

import ml_collections

from carjax.data import aux_labels
from carjax.errors import ConfigError, DataError

# Keys of the per-epoch eval summary a run can select its best checkpoint by. Higher is
# better for all but `loss`.
BEST_METRICS = ("accuracy", "weighted_precision", "balanced_accuracy", "macro_f1",
                "weighted_f1", "top3_accuracy", "top5_accuracy", "loss")
LOWER_IS_BETTER = frozenset({"loss"})
OPTIMIZERS = ("adamw", "sgd")
DTYPES = ("float32", "bfloat16", "float16")
LOSSES = ("cross_entropy", "cosine")
HEAD_TYPES = ("linear", "cosine")


def metric_improves(metric: str, new: float, old: float | None) -> bool:
  """Whether `new` beats `old` for `metric`; a non-finite value never does."""
  if not math.isfinite(new):
    return False
  if old is None or not math.isfinite(old):
    return True
  return new < old if metric in LOWER_IS_BETTER else new > old


def _get(config, path: str) -> Any:
  node = config
  for part in path.split("."):
    node = node[part]
  return node


def _number(config, path: str) -> Any:
  value = _get(config, path)
  if isinstance(value, bool) or not isinstance(value, numbers.Number):
    raise ConfigError(f"config.{path} must be a number, got {value!r}")
  if not math.isfinite(value):
    raise ConfigError(f"config.{path} must be finite, got {value!r}")
  return value


def _check_range(config, path: str, low=None, high=None, *, low_open=False, high_open=False,
                 integer=False) -> None:
  value = _number(config, path)
  if integer and int(value) != value:
    raise ConfigError(f"config.{path} must be an integer, got {value!r}")
  too_low = low is not None and (value <= low if low_open else value < low)
  too_high = high is not None and (value >= high if high_open else value > high)
  if too_low or too_high:
    lo = "" if low is None else f"{'(' if low_open else '['}{low}"
    hi = "" if high is None else f"{high}{')' if high_open else ']'}"
    where = (f"in {lo}, {hi}" if low is not None and high is not None else
             f"{'>' if low_open else '>='} {low}" if low is not None else
             f"{'<' if high_open else '<='} {high}")
    raise ConfigError(f"config.{path} must be {where}, got {value!r}")


def _check_choice(value, path: str, choices) -> None:
  if value not in choices:
    raise ConfigError(f"config.{path}={value!r} is not one of {', '.join(map(str, choices))}")


def _check_pair(config, path: str, low: float, high: float | None) -> None:
  value = _get(config, path)
  if len(tuple(value)) != 2:
    raise ConfigError(f"config.{path} must be a pair (min, max), got {value!r}")
  a, b = (float(v) for v in value)
  if not (low < a <= b and (high is None or b <= high)):
    bound = f"{low} < min <= max" + (f" <= {high}" if high is not None else "")
    raise ConfigError(f"config.{path} must satisfy {bound}, got {tuple(value)!r}")


def _check_image_size(size, name: str) -> None:
  from carjax.data import decode  # pylint: disable=g-import-not-at-top
  try:
    height, width = decode.image_hw(size)
  except ValueError as e:
    raise ConfigError(f"config.{name}: {e}") from None
  if min(height, width) < 8:
    shown = tuple(size) if isinstance(size, (list, tuple)) else size
    raise ConfigError(f"config.{name} must be at least 8 pixels a side, got {shown!r}")


def _validate_data(config) -> None:
  from carjax.data import decode, splits  # pylint: disable=g-import-not-at-top
  data = config.data
  for name in ("train_split", "eval_split"):
    if not isinstance(data[name], str) or not data[name].strip():
      raise ConfigError(f"config.data.{name} must name a split, got {data[name]!r}")
  _check_image_size(data.image_size, "data.image_size")
  _check_range(config, "data.dev_fraction", 0.0, 1.0, high_open=True)
  _check_choice(data.resize_mode, "data.resize_mode", decode.RESIZE_MODES)
  _check_range(config, "data.num_workers", 0, integer=True)
  _check_range(config, "data.split_seed", integer=True)
  try:
    splits.check_split_fractions(data.val_fraction, data.test_fraction)
  except ValueError as e:
    raise ConfigError(f"config.data.{e}") from None
  augment = data.augment
  _check_pair(config, "data.augment.crop_scale", 0.0, 1.0)
  _check_pair(config, "data.augment.crop_ratio", 0.0, None)
  if not isinstance(augment.flip, bool):
    raise ConfigError(f"config.data.augment.flip must be True or False, got {augment.flip!r}")
  _check_range(config, "data.augment.color_jitter", 0.0, 1.0)
  _check_range(config, "data.augment.cutmix_prob", 0.0, 1.0)
  _check_range(config, "data.augment.cutmix_alpha", 0.0, low_open=True)
  _check_range(config, "data.augment.mixup_prob", 0.0, 1.0)
  _check_range(config, "data.augment.mixup_alpha", 0.0, low_open=True)
  if augment.cutmix_prob and augment.mixup_prob:
    raise ConfigError("config.data.augment.cutmix_prob and config.data.augment.mixup_prob are "
                      "both above 0: choose one of CutMix and mixup")
  if data.get("aux_labels_csv", ""):
    aux_labels.check_options(data)


def _validate_model(config) -> None:
  from carjax import models  # pylint: disable=g-import-not-at-top
  model = config.model
  _check_choice(model.get("dtype", "float32"), "model.dtype", DTYPES)
  _check_choice(model.get("param_dtype", "float32"), "model.param_dtype", DTYPES)
  if "head_type" in model:
    _check_choice(model.head_type, "model.head_type", HEAD_TYPES)
  for name in ("input_mean", "input_std"):
    values = tuple(model[name])
    if len(values) != 3 or not all(isinstance(v, numbers.Number) and math.isfinite(v)
                                   for v in values):
      raise ConfigError(f"config.model.{name} must be 3 finite numbers (R, G, B), got {values}")
  if any(v <= 0 for v in model.input_std):
    raise ConfigError(f"config.model.input_std must be > 0, got {tuple(model.input_std)}")
  # config.model.pretrained (a folder or a known weights name) is resolved right after this
  # check by carjax.convert.weights_cache, which converts or stops with a one-line error.
  try:
    models.build_model(model, 2)
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise ConfigError(f"config.model: {e}") from None


def _validate_train(config) -> None:
  train = config.train
  _check_range(config, "train.batch_size", 1, integer=True)
  _check_range(config, "train.num_epochs", 1, integer=True)
  _check_choice(train.optimizer, "train.optimizer", OPTIMIZERS)
  _check_range(config, "train.learning_rate", 0.0, low_open=True)
  _check_range(config, "train.head_lr_multiplier", 0.0)
  if "layer_lr_decay" in train:
    _check_range(config, "train.layer_lr_decay", 0.0, 1.0, low_open=True)
  _check_range(config, "train.momentum", 0.0, 1.0, high_open=True)
  _check_range(config, "train.weight_decay", 0.0)
  _check_range(config, "train.warmup_epochs", 0.0)
  _check_range(config, "train.freeze_backbone_epochs", 0.0)
  if train.frozen_params:
    try:
      re.compile(train.frozen_params)
    except re.error as e:
      raise ConfigError(f"config.train.frozen_params={train.frozen_params!r} is not a regular "
                        f"expression: {e}") from None
  _check_range(config, "train.label_smoothing", 0.0, 1.0, high_open=True)
  if "aux_loss_weight" in train:
    _check_range(config, "train.aux_loss_weight", 0.0)
  if "loss" in train:
    _check_choice(train.loss, "train.loss", LOSSES)
    _check_range(config, "train.cosine_ce_weight", 0.0)
  if train.get("teacher_workdir") and not os.path.isdir(
      os.path.expanduser(train.teacher_workdir)):
    raise ConfigError(f"config.train.teacher_workdir={train.teacher_workdir!r} is not a "
                      "folder")
  if "distill_weight" in train:
    _check_range(config, "train.distill_weight", 0.0, 1.0)
    _check_range(config, "train.distill_temperature", 0.0, low_open=True)
  _check_range(config, "train.grad_clip_norm", 0.0)
  _check_range(config, "train.ema_decay", 0.0, 1.0, high_open=True)
  _check_range(config, "train.log_every_steps", 1, integer=True)
  if "grad_accum_steps" in train:
    _check_range(config, "train.grad_accum_steps", 1, integer=True)
  if "mesh" in config:
    _check_range(config, "mesh.fsdp", 1, integer=True)
    _check_range(config, "mesh.fsdp_min_size", 0, integer=True)
  if not isinstance(train.class_weights, bool):
    raise ConfigError(f"config.train.class_weights must be True or False, "
                      f"got {train.class_weights!r}")


def _validate_eval_and_checkpoints(config) -> None:
  _check_range(config, "eval.batch_size", 1, integer=True)
  _check_range(config, "eval.every_epochs", 1, integer=True)
  _check_choice(config.eval.best_metric, "eval.best_metric", BEST_METRICS)
  if config.eval.get("image_size"):  # () = the training size.
    _check_image_size(config.eval.image_size, "eval.image_size")
  if "checkpoint" in config:
    _check_range(config, "checkpoint.every_steps", 0, integer=True)
    _check_range(config, "checkpoint.every_minutes", 0.0)
  resume_from = config.init.resume_from
  if resume_from and not os.path.isdir(os.path.expanduser(resume_from)):
    raise ConfigError(f"config.init.resume_from={resume_from!r} is not a folder")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises `ConfigError` naming the first invalid option; reads no data."""
  from carjax.data import loading  # pylint: disable=g-import-not-at-top
  if not config.data.source:
    raise ConfigError(loading.NO_DATA_HELP)
  _check_range(config, "seed", integer=True)
  _validate_data(config)
  _validate_model(config)
  _validate_train(config)
  _validate_eval_and_checkpoints(config)


def check_data_source(source, config: ml_collections.ConfigDict) -> None:
  """Split names exist; for image folders (listed without decoding): the train split has
  images of at least two classes and the eval split is not empty."""
  from carjax.data import sources, splits  # pylint: disable=g-import-not-at-top
  data = config.data
  for option in ("train_split", "eval_split"):
    try:
      splits.resolve_split(data[option], source.splits, repr(source))
    except ValueError as e:
      raise ConfigError(f"config.data.{option}: {e}") from None
  if len(source.class_names) < 2:
    raise DataError(f"{source!r} has {len(source.class_names)} class: a classifier needs at "
                    "least two")
  if isinstance(getattr(source, "base", source), sources.ImageFolderSource):
    train = source.records(data.train_split)
    present = {r.label for r in train}
    if len(present) < 2:
      raise DataError(f"the train split {data.train_split!r} of {source.root} has images of "
                      f"{len(present)} class: a classifier needs at least two")
    if not source.records(data.eval_split):
      raise DataError(f"the eval split {data.eval_split!r} of {source.root} is empty "
                      "(config.data.eval_split)")


def check_decoded(train_labels, eval_labels, config: ml_collections.ConfigDict) -> None:
  """After decoding: splits still usable once unreadable files are skipped."""
  data = config.data
  if len(set(int(x) for x in train_labels)) < 2:
    raise DataError(f"the train split {data.train_split!r} has readable images of fewer than "
                    "two classes (see unreadable_files.json)")
  if len(eval_labels) == 0:
    raise DataError(f"the eval split {data.eval_split!r} has no readable image "
                    "(see unreadable_files.json)")

"""The recipe table of the study: how each model was trained, read from its config."""

from __future__ import annotations

import os
from typing import Any

from carjax.data import decode

RECIPE_COLUMNS = ("model", "input (h×w)", "epochs", "frozen", "augmentation", "optimiser",
                  "regularisation", "evaluation", "chosen on")


def _pair(values) -> str:
  return "–".join(f"{float(v):g}" for v in values)


def teacher_run_name(config) -> str:
  """The run a distilled model learnt from ('' when it had no teacher)."""
  return os.path.basename((config.train.get("teacher_workdir") or "").rstrip("/"))


def recipe_row(name: str, config) -> list[str]:
  """One row of `RECIPE_COLUMNS` for a run's config (a ConfigDict or its JSON form)."""
  data, train, model = config.data, config.train, config.model
  height, width = decode.image_hw(data.image_size)
  aug = data.augment
  augmentation = (f"crop area {_pair(aug.crop_scale)}, aspect ×{_pair(aug.crop_ratio)}"
                  f"{', flip' if aug.flip else ''}"
                  f"{f', colour {aug.color_jitter:g}' if aug.color_jitter else ''}")
  head = float(train.get("head_lr_multiplier", 1.0))
  layer_decay = float(train.get("layer_lr_decay", 1.0))
  optimiser = (f"{train.optimizer} lr {train.learning_rate:g}"
               f"{f' (head ×{head:.3g})' if head != 1.0 else ''}"
               f"{f', layer decay {layer_decay:g}' if layer_decay != 1.0 else ''}, "
               f"wd {train.weight_decay:g}, "
               f"batch {train.batch_size}, warm-up {train.warmup_epochs:g} ep + cosine to 0")
  overrides = dict(model.get("overrides", {}) or {})
  dropout = overrides.get("dropout_rate", model.get("dropout_rate"))
  regular = [f"label smoothing {train.label_smoothing:g}"]
  if train.get("loss", "cross_entropy") == "cosine":
    regular.insert(0, f"cosine loss + {float(train.cosine_ce_weight):g} × CE"
                      f"{' (cosine head)' if model.get('head_type') == 'cosine' else ''}")
  if dropout:
    regular.append(f"dropout {dropout:g}")
  if overrides.get("drop_connect_rate"):
    regular.append(f"drop-connect {overrides['drop_connect_rate']:g}")
  if train.get("ema_decay"):
    regular.append(f"EMA {train.ema_decay:g}")
  pretrained = model.get("pretrained") or ""
  frozen = train.get("frozen_params") or ""
  frozen_text = f"`{frozen}`" if frozen else "nothing"
  teacher = teacher_run_name(config)
  if model.get("freeze_batchnorm"):
    frozen_text += "; BatchNorm statistics"
  if pretrained:
    frozen_text += f"; from {pretrained}"
  elif teacher:
    frozen_text += (f"; not from scratch: distilled from {teacher}"
                    f" (weight {float(train.distill_weight):g}, "
                    f"T {float(train.distill_temperature):g})")
  else:
    frozen_text += "; from scratch"
  evaluation = "flip TTA" if config.eval.get("flip_tta") else "single view"
  if config.eval.get("image_size"):
    evaluation += " at {}×{}".format(*decode.image_hw(config.eval.image_size))
  dev = float(data.get("dev_fraction", 0.0) or 0.0)
  chosen_on = f"dev ({dev:.0%} of train)" if dev else data.eval_split
  return [name, f"{height}×{width}", str(train.num_epochs), frozen_text, augmentation,
          optimiser, ", ".join(regular), evaluation, chosen_on]


def recipe_rows(configs: dict[str, Any]) -> list[list[str]]:
  return [recipe_row(name, config) for name, config in configs.items()]

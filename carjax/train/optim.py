"""Optimisers from config: AdamW or SGD+momentum, warm-up + cosine, per-group learning rates.

Parameters fall into two groups: the classifier `head` (with the auxiliary `aux_head`, if
any) and everything else (the backbone).
Each group has its own schedule, so fine-tuning can train the head alone for the first
`freeze_backbone_epochs` (the backbone's learning rate is exactly 0 there) and then the
whole network with a smaller backbone rate. With `layer_lr_decay` d < 1 the backbone is split
further, layer by layer (`models.layer_depths`): the layer at depth k of K trains at the
backbone's rate × d^(K − k), so the generic early layers of a pretrained network move least.
Weight decay applies to kernels only: decaying biases and BatchNorm scales/offsets only hurts.
"""

from __future__ import annotations

import re

import flax.traverse_util
import jax.numpy as jnp
import ml_collections
import optax

from carjax import models


def warmup_cosine(peak: float, total_steps: int, warmup_steps: int, start_step: int = 0):
  """0 before `start_step`, linear warm-up to `peak`, then cosine decay to 0 at the end."""
  total = max(total_steps - start_step, 1)
  warmup = min(warmup_steps, total - 1) if total > 1 else 0
  inner = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=max(warmup, 0),
      decay_steps=total, end_value=0.0)
  if start_step == 0:
    return inner
  return lambda step: jnp.where(step < start_step, 0.0, inner(jnp.maximum(step - start_step, 0)))


def param_groups(params, frozen_pattern: str = "", depths: dict[str, int] | None = None) -> dict:
  """A label per parameter (same tree as params): 'head' for the classifiers, 'frozen' for
  those whose '/'-joined path matches `frozen_pattern` (a regex; empty: none), else
  'backbone', or 'backbone_<depth>' with `depths` (the depth of each top-level layer)."""
  frozen = re.compile(frozen_pattern) if frozen_pattern else None

  def label(path):
    if path[0] in models.CLASSIFIER_HEADS:
      return "head"
    if frozen is not None and frozen.search("/".join(path)):
      return "frozen"
    return "backbone" if depths is None else f"backbone_{depths[path[0]]}"

  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({path: label(path) for path in flat})


def decay_mask(params):
  """True for convolution and dense kernels, False for biases and normalisation parameters.

  Leaves that `optax.multi_transform` masked out for another group stay masked.
  """
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({
      p: v if isinstance(v, optax.MaskedNode) else p[-1] == "kernel" for p, v in flat.items()})


def make_schedules(train_config: ml_collections.ConfigDict, steps_per_epoch: int):
  """Learning-rate schedules {'head': fn, 'backbone': fn} over the whole run."""
  total = train_config.num_epochs * steps_per_epoch
  warmup = int(train_config.warmup_epochs * steps_per_epoch)
  frozen = int(train_config.freeze_backbone_epochs * steps_per_epoch)
  head_lr = train_config.learning_rate * train_config.head_lr_multiplier
  return {
      "head": warmup_cosine(head_lr, total, warmup),
      "backbone": warmup_cosine(train_config.learning_rate, total, warmup, start_step=frozen),
  }


def make_optimizer(train_config: ml_collections.ConfigDict, steps_per_epoch: int, params):
  """The optax transformation for `params`, and its schedules (for logging; with layer-wise
  decay, 'backbone' is the rate of the deepest backbone layer).

  Each group ('head', 'backbone' or its layers) runs the chain that `optax.adamw`/`optax.sgd` are made of
  with its own learning-rate schedule (Adam and momentum are per-element, so splitting them
  changes nothing). Gradient clipping, when on, is per group. 'frozen' parameters get a zero
  update that does not depend on their gradient at all, so XLA drops their backward pass.
  """
  schedules = make_schedules(train_config, steps_per_epoch)
  if train_config.optimizer not in ("adamw", "sgd"):
    raise ValueError(
        f"config.train.optimizer must be 'adamw' or 'sgd', got {train_config.optimizer!r}")

  def group_chain(schedule):
    decay = optax.add_decayed_weights(train_config.weight_decay, mask=decay_mask)
    if train_config.optimizer == "adamw":
      parts = [optax.scale_by_adam(b1=0.9, b2=0.999), decay]
    else:
      parts = [decay, optax.trace(decay=train_config.momentum, nesterov=True)]
    if train_config.grad_clip_norm:
      parts.insert(0, optax.clip_by_global_norm(train_config.grad_clip_norm))
    return optax.chain(*parts, optax.scale_by_learning_rate(schedule))

  group_schedules = {"head": schedules["head"], "backbone": schedules["backbone"]}
  layer_decay = train_config.get("layer_lr_decay", 1.0)
  depths = None
  if layer_decay != 1.0:
    depths = models.layer_depths(params)
    top = max(depths.values())
    del group_schedules["backbone"]
    for depth in sorted(set(depths.values())):
      group_schedules[f"backbone_{depth}"] = _scaled(schedules["backbone"],
                                                      layer_decay ** (top - depth))
  transforms = {g: group_chain(s) for g, s in group_schedules.items()}
  transforms["frozen"] = optax.set_to_zero()
  groups = param_groups(params, train_config.get("frozen_params", ""), depths)
  return optax.multi_transform(transforms, groups), schedules


def _scaled(schedule, factor: float):
  return lambda step: factor * schedule(step)

"""Optimisers from config: AdamW or SGD+momentum, warm-up + cosine, per-group learning rates.

Parameters fall into two groups: the classifier `head` and everything else (the backbone).
Each group has its own schedule, so fine-tuning can train the head alone for the first
`freeze_backbone_epochs` (the backbone's learning rate is exactly 0 there) and then the
whole network with a smaller backbone rate. Weight decay applies to kernels only: decaying
biases and BatchNorm scales/offsets only hurts.
"""

from __future__ import annotations

import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import optax


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


def param_groups(params) -> dict:
  """'head' for the classifier's parameters, 'backbone' for all others (same tree as params)."""
  flat = flax.traverse_util.flatten_dict(params)
  labels = {path: ("head" if path[0] == "head" else "backbone") for path in flat}
  return flax.traverse_util.unflatten_dict(labels)


def decay_mask(params):
  """True for convolution and dense kernels, False for biases and normalisation parameters."""
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({p: p[-1] == "kernel" for p in flat})


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
  """The optax transformation for `params`, and its schedules (for logging).

  Written as the chain that `optax.adamw`/`optax.sgd` are made of, with the final
  learning-rate scaling split per parameter group.
  """
  schedules = make_schedules(train_config, steps_per_epoch)
  decay = optax.add_decayed_weights(train_config.weight_decay, mask=decay_mask(params))
  if train_config.optimizer == "adamw":
    direction = [optax.scale_by_adam(b1=0.9, b2=0.999), decay]
  elif train_config.optimizer == "sgd":
    direction = [decay, optax.trace(decay=train_config.momentum, nesterov=True)]
  else:
    raise ValueError(
        f"config.train.optimizer must be 'adamw' or 'sgd', got {train_config.optimizer!r}")
  step_size = optax.multi_transform(
      {g: optax.scale_by_learning_rate(s) for g, s in schedules.items()}, param_groups(params))
  parts = direction + [step_size]
  if train_config.grad_clip_norm:
    parts = [optax.clip_by_global_norm(train_config.grad_clip_norm)] + parts
  return optax.chain(*parts), schedules

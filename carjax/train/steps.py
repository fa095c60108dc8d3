"""The pure training and evaluation steps.

`train_step(state, batch, rng)` augments the uint8 batch on the device, runs the model with
dropout, and applies one optimiser update; `eval_step(state, batch)` returns per-example
logits plus sums and counts that honour the padding mask, so every image counts once.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from carjax.data import augment
from carjax.train import optim
from carjax.train.state import TrainState


def cross_entropy(logits, labels, num_classes: int, label_smoothing: float = 0.0,
                  example_weights=None):
  """Mean softmax cross-entropy with label smoothing and optional per-example weights.

  Returns (weighted mean loss, per-example losses).
  """
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
  losses = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
  if example_weights is None:
    return jnp.mean(losses), losses
  return jnp.sum(losses * example_weights) / jnp.maximum(jnp.sum(example_weights), 1e-8), losses


def _trained_norm(grads, frozen_pattern: str):
  """Global norm of the gradients of trained parameters; frozen ones are left out, so XLA
  still drops their backward pass."""
  labels = jax.tree.leaves(optim.param_groups(grads, frozen_pattern))
  return optax.tree.norm([g for g, label in zip(jax.tree.leaves(grads), labels)
                          if label != "frozen"])


def make_train_step(model: nn.Module, config: ml_collections.ConfigDict, num_classes: int,
                    mean, std, class_weights=None) -> Callable[..., Any]:
  """Builds the (not yet jitted) `train_step(state, batch, rng) -> (state, metrics)`."""
  data_cfg, train_cfg = config.data, config.train
  aug_cfg = data_cfg.augment
  compute_dtype = jnp.dtype(config.model.get("dtype", "float32"))
  weights_table = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)

  def train_step(state: TrainState, batch, rng):
    step_rng = jax.random.fold_in(rng, state.step)
    aug_rng, dropout_rng = jax.random.split(step_rng)
    images = augment.augment_batch(
        aug_rng, batch["image"], out_size=data_cfg.image_size,
        scale=tuple(aug_cfg.crop_scale), ratio=tuple(aug_cfg.crop_ratio),
        flip=aug_cfg.flip, jitter=aug_cfg.color_jitter)
    images = augment.normalize(images, mean, std, compute_dtype)
    labels = batch["label"]
    example_weights = None if weights_table is None else weights_table[labels]

    def loss_fn(params):
      logits, updates = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, images, train=True,
          rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
      loss, _ = cross_entropy(logits, labels, num_classes, train_cfg.label_smoothing,
                              example_weights)
      return loss, (logits, updates)

    (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads,
                                      batch_stats=updates.get("batch_stats", state.batch_stats))
    if train_cfg.ema_decay:
      decay = train_cfg.ema_decay
      new_state = new_state.replace(ema_params=jax.tree.map(
          lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, new_state.params))
    count = labels.shape[0]
    metrics = {
        "loss_sum": loss * count,
        "correct": jnp.sum(jnp.argmax(logits, -1) == labels),
        "count": jnp.asarray(count, jnp.int32),
        # The host stops the run on a non-finite loss or gradient (carjax.train.loop).
        "grad_norm": _trained_norm(grads, train_cfg.frozen_params),
    }
    return new_state, metrics

  return train_step


def make_eval_step(model: nn.Module, config: ml_collections.ConfigDict, num_classes: int,
                   mean, std) -> Callable[..., Any]:
  """Builds `eval_step(state, batch) -> dict` with masked sums and per-example logits."""
  compute_dtype = jnp.dtype(config.model.get("dtype", "float32"))
  use_ema = bool(config.train.ema_decay)

  def eval_step(state: TrainState, batch):
    images = augment.normalize(batch["image"], mean, std, compute_dtype)
    logits = model.apply(state.eval_variables(use_ema), images, train=False)
    logits = logits.astype(jnp.float32)
    labels, mask = batch["label"], batch["mask"]
    _, losses = cross_entropy(logits, labels, num_classes)
    top3 = jax.lax.top_k(logits, min(3, num_classes))[1]
    return {
        "logits": logits,
        "loss_sum": jnp.sum(losses * mask),
        "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
        "top3_correct": jnp.sum(jnp.any(top3 == labels[:, None], axis=-1) * mask),
        "count": jnp.sum(mask),
    }

  return eval_step

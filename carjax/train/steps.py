"""The pure training and evaluation steps.

`train_step(state, batch, rng)` augments the uint8 batch on the device, runs the model with
dropout, and applies one optimiser update; `eval_step(state, batch)` returns per-example
logits plus sums and counts that honour the padding mask, so every image counts once.

The factories take plain values (the model, its `InputSpec`, an `AugmentSpec`, the loss
options), never the config: `carjax.train.setup.build` reads the config once and binds them.

Gradient accumulation (`accum_steps = k > 1`, from `config.train.grad_accum_steps`) splits
each global batch into k micro-batches inside the one jitted step (a `lax.scan`, so only one
micro-batch's activations are alive at a time) and applies one optimiser update with the
gradient of the whole batch's loss. Augmentation keys, class weights and the loss
normalisation are those of the whole batch, so without BatchNorm (and without dropout, whose
masks are drawn per micro-batch) k micro-batches give exactly the update of one k× larger
batch. BatchNorm normalises each micro-batch with that micro-batch's own statistics (as any
device holding only a micro-batch must), and the running statistics take one update per step
with the micro-batches' averaged mean and variance: the running mean is the whole batch's,
the running variance is the mean within-micro-batch variance ("ghost batch" statistics).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from carjax import models
from carjax.data import augment
from carjax.models import tta
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


def distillation_loss(logits, teacher_logits, temperature: float):
  """Per-example T² · KL(softmax(teacher / T) ‖ softmax(student / T)), T = `temperature`.

  Its gradient in the student's logits is T · (softmax(student / T) − softmax(teacher / T)):
  the T² keeps the soft targets' pull comparable with the labels' as T grows (Hinton et al.,
  2015, "Distilling the knowledge in a neural network")."""
  t = float(temperature)
  return t * t * optax.losses.kl_divergence_with_log_targets(
      jax.nn.log_softmax(logits.astype(jnp.float32) / t),
      jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / t))


def cosine_loss(logits, labels):
  """Per-example 1 − cos(z, e_y): one minus the cosine between the logits z and the label's
  one-hot vector, i.e. 1 − z_y / ‖z‖ (Barz & Denzler, 2020, "Deep learning on small datasets
  without pre-training using cosine loss"). It ignores the logits' scale, so it never pays
  the network to grow them; its gradient is −(e_y − ẑ_y ẑ) / ‖z‖ with ẑ = z / ‖z‖
  (docs/mathematics.md, Eq. 33)."""
  z = logits.astype(jnp.float32) if logits.dtype != jnp.float64 else logits
  # The tiny floor only matters for all-zero logits, whose cosine is then taken as 0.
  norm = jnp.sqrt(jnp.sum(z * z, axis=-1) + 1e-12)
  return 1.0 - jnp.take_along_axis(z, labels[:, None], axis=-1)[:, 0] / norm


def _trained_norm(grads, frozen_pattern: str):
  """Global norm of the gradients of trained parameters; frozen ones are left out, so XLA
  still drops their backward pass."""
  labels = jax.tree.leaves(optim.param_groups(grads, frozen_pattern))
  return optax.tree.norm([g for g, label in zip(jax.tree.leaves(grads), labels)
                          if label != "frozen"])


def class_weights_for(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Inverse-frequency weights with mean 1 over examples (a class absent from train gets 0)."""
  counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
  weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
  return weights.astype(np.float32)


def make_train_step(*, model: nn.Module, input_spec: models.InputSpec,
                    augment_spec: augment.AugmentSpec, num_classes: int,
                    label_smoothing: float = 0.0, ema_decay: float = 0.0,
                    frozen_pattern: str = "", accum_steps: int = 1, class_weights=None,
                    micro_batch_sharding=None, aux_classes: int = 0,
                    aux_loss_weight: float = 0.0, distill_weight: float = 0.0,
                    distill_temperature: float = 1.0,
                    cosine_ce_weight: float | None = None) -> Callable[..., Any]:
  """Builds the (not yet jitted) `train_step(state, batch, rng) -> (state, metrics)`.

  `frozen_pattern` (the optimiser's frozen parameters) is left out of the logged gradient
  norm. `micro_batch_sharding` (for accum_steps > 1) places the [k, batch/k, ...]
  micro-batch stack so that every micro-batch is split over every device. With
  `aux_classes > 0` (a model with an auxiliary head, batches with an 'aux_label'), each
  example's loss is CE(make) + `aux_loss_weight` × CE(auxiliary label), both label-smoothed
  (and class-weighted by the make) alike; the logged cross-entropy and accuracy stay the
  makes', and `aux_correct` counts the auxiliary head's hits. With `distill_weight > 0`
  (batches with 'teacher_logits'), the make's loss is mixed with the teacher's soft targets
  (`make_per_example_loss`). With `cosine_ce_weight` λ (not None), the make's cross-entropy
  is replaced by `cosine_loss` + λ × CE. With CutMix
  (`augment_spec.cutmix_prob > 0`), each example's loss is that of its own labels weighted
  by the share of its own pixels plus that of its partner's labels weighted by the rest;
  the logged accuracy and cross-entropy still compare with the image's own make. With mixup
  (`augment_spec.mixup_prob > 0`) the same, its own labels weighted by λ.
  """
  weights_table = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)
  apply_kwargs = {"return_aux": True} if aux_classes else {}
  per_example_loss = make_per_example_loss(num_classes, label_smoothing, aux_classes,
                                           aux_loss_weight, distill_weight,
                                           distill_temperature, cosine_ce_weight)

  def forward(params, batch_stats, images, dropout_rng):
    """((logits, auxiliary logits or None), BatchNorm statistics) in training mode."""
    out, updates = model.apply({"params": params, "batch_stats": batch_stats}, images,
                               train=True, rngs={"dropout": dropout_rng},
                               mutable=["batch_stats"], **apply_kwargs)
    return (out if aux_classes else (out, None)), updates.get("batch_stats", batch_stats)

  def train_step(state: TrainState, batch, rng):
    step_rng = jax.random.fold_in(rng, state.step)
    aug_rng, dropout_rng = jax.random.split(step_rng)
    images = augment_spec.apply(aug_rng, batch["image"])
    labels = batch["label"]
    targets = {"label": labels}
    if aux_classes:
      targets["aux_label"] = batch["aux_label"]
    if distill_weight:
      targets["teacher_logits"] = batch["teacher_logits"]
    if augment_spec.cutmix_prob or augment_spec.mixup_prob:
      # Their own keys, folded in, so the crops and dropout of runs without them stay as
      # they were.
      images, targets = _mixed_batch(step_rng, images, targets, augment_spec)
    images = input_spec.normalize(images)
    example_weights = None if weights_table is None else weights_table[labels]

    def loss_fn(params):
      outputs, batch_stats = forward(params, state.batch_stats, images, dropout_rng)
      loss = _weighted_mean(per_example_loss(outputs, targets), example_weights)
      return loss, (outputs, batch_stats)

    if accum_steps == 1:
      (loss, (outputs, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          state.params)
    else:
      loss, outputs, grads, batch_stats = _accumulated_gradients(
          forward, state, images, targets, example_weights, dropout_rng, accum_steps,
          per_example_loss, micro_batch_sharding)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    if ema_decay:
      decay = ema_decay
      new_state = new_state.replace(ema_params=jax.tree.map(
          lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, new_state.params))
    metrics = _step_metrics(loss, outputs, targets, num_classes)
    # The host stops the run on a non-finite loss or gradient (carjax.train.loop).
    metrics["grad_norm"] = _trained_norm(grads, frozen_pattern)
    return new_state, metrics

  return train_step


def _step_metrics(loss, outputs, targets, num_classes: int) -> dict[str, Any]:
  """The sums the host accumulates over an epoch; accuracy and cross-entropy are the
  makes', against each image's own labels."""
  (logits, aux_logits), labels = outputs, targets["label"]
  count = labels.shape[0]
  # The objective may be label-smoothed, class-weighted and mixed; the plain cross-entropy
  # is what the evaluations report, so train and eval curves can share one definition.
  _, plain = cross_entropy(logits, labels, num_classes)
  metrics = {"loss_sum": loss * count, "ce_sum": jnp.sum(plain),
             "correct": jnp.sum(jnp.argmax(logits, -1) == labels),
             "count": jnp.asarray(count, jnp.int32)}
  if aux_logits is not None:
    metrics["aux_correct"] = jnp.sum(jnp.argmax(aux_logits, -1) == targets["aux_label"])
  return metrics


def make_per_example_loss(num_classes: int, label_smoothing: float, aux_classes: int,
                          aux_loss_weight: float, distill_weight: float = 0.0,
                          distill_temperature: float = 1.0,
                          cosine_ce_weight: float | None = None) -> Callable[..., Any]:
  """`loss(outputs, targets) -> [B]`: CE(make) + `aux_loss_weight` × CE(aux label) (when
  `aux_classes`), label-smoothed alike; with `cosine_ce_weight` λ (not None) the make's
  term is `cosine_loss` + λ × CE (the cross-entropy label-smoothed, the cosine not); with `distill_weight` w > 0 (targets then carry
  'teacher_logits'), the make's term is (1 − w) × CE + w × `distillation_loss`. With CutMix's
  targets ('kept', 'partner_*') or mixup's, each target set weighs as much as its image's share
  of the pixels (or λ)."""

  def label_losses(outputs, targets, prefix: str = ""):
    logits, aux_logits = outputs
    labels = targets[prefix + "label"]
    losses = cross_entropy(logits, labels, num_classes, label_smoothing)[1]
    if cosine_ce_weight is not None:
      losses = cosine_loss(logits, labels) + cosine_ce_weight * losses
    if distill_weight:
      losses = ((1.0 - distill_weight) * losses + distill_weight * distillation_loss(
          logits, targets[prefix + "teacher_logits"], distill_temperature))
    if aux_classes:
      losses = losses + aux_loss_weight * cross_entropy(
          aux_logits, targets[prefix + "aux_label"], aux_classes, label_smoothing)[1]
    return losses

  def per_example_loss(outputs, targets):
    losses = label_losses(outputs, targets)
    if "kept" not in targets:
      return losses
    kept = targets["kept"]
    return kept * losses + (1.0 - kept) * label_losses(outputs, targets, "partner_")

  return per_example_loss


def _mixed_batch(step_rng, images, targets, augment_spec: augment.AugmentSpec):
  """CutMix's or mixup's images, and the targets with each example's partner's labels
  ('partner_*') and the weight of its own ('kept': its share of its own pixels, or λ)."""
  if augment_spec.cutmix_prob:
    images, partner, kept = augment.cutmix(jax.random.fold_in(step_rng, 2), images,
                                           alpha=augment_spec.cutmix_alpha,
                                           prob=augment_spec.cutmix_prob)
  else:
    images, partner, kept = augment.mixup(jax.random.fold_in(step_rng, 3), images,
                                          alpha=augment_spec.mixup_alpha,
                                          prob=augment_spec.mixup_prob)
  return images, {**targets, **{f"partner_{k}": v[partner] for k, v in targets.items()},
                  "kept": kept}


def _weighted_mean(losses, example_weights):
  """The mean of per-example losses, weighted as `cross_entropy` weights them."""
  if example_weights is None:
    return jnp.mean(losses)
  return (jnp.sum(losses * example_weights)
          / jnp.maximum(jnp.sum(example_weights), 1e-8))


def _micro_batches(x, num_micro: int, sharding):
  """[B, ...] → [k, B/k, ...] with micro-batch i = rows i, i+k, i+2k, …: each device's
  contiguous block of the batch holds an equal share of every micro-batch, so splitting
  moves no data between devices."""
  x = x.reshape((x.shape[0] // num_micro, num_micro) + x.shape[1:]).swapaxes(0, 1)
  return x if sharding is None else jax.lax.with_sharding_constraint(x, sharding)


def _accumulated_gradients(forward, state, images, targets, example_weights, dropout_rng,
                           num_micro: int, per_example_loss, sharding):
  """(loss, outputs, grads, batch_stats) of the whole batch, computed one micro-batch at a
  time (`targets`: the batch's label arrays by name; `outputs`: (logits, auxiliary logits or
  None)). Each micro-batch's loss is its share of the whole batch's weighted mean, so the
  summed gradients are the whole batch's gradient."""
  batch_size = targets["label"].shape[0]
  weights = (jnp.ones((batch_size,), jnp.float32) if example_weights is None
             else example_weights)
  total_weight = jnp.maximum(jnp.sum(weights), 1e-8)
  split = lambda x: _micro_batches(x, num_micro, sharding)
  xs = (split(images), jax.tree.map(split, targets), split(weights), jnp.arange(num_micro))

  def micro_step(carry, x):
    grads_sum, stats_sum = carry
    micro_images, micro_targets, micro_weights, index = x

    def loss_fn(params):
      outputs, stats = forward(params, state.batch_stats, micro_images,
                               jax.random.fold_in(dropout_rng, index))
      loss = jnp.sum(per_example_loss(outputs, micro_targets) * micro_weights) / total_weight
      return loss, (outputs, stats)

    (loss, (outputs, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    carry = (jax.tree.map(jnp.add, grads_sum, grads), jax.tree.map(jnp.add, stats_sum, stats))
    return carry, (loss, outputs)

  zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)
  (grads, stats_sum), (losses, outputs) = jax.lax.scan(
      micro_step, (zeros(state.params), zeros(state.batch_stats)), xs)
  # Every micro-batch's running-statistics update starts from the same old statistics, so
  # their mean is one update with the micro-batches' mean statistics.
  batch_stats = jax.tree.map(lambda s: s / num_micro, stats_sum)
  outputs = jax.tree.map(
      lambda y: y.swapaxes(0, 1).reshape((batch_size,) + y.shape[2:]), outputs)
  return jnp.sum(losses), outputs, grads, batch_stats


def make_eval_step(*, model: nn.Module, input_spec: models.InputSpec, num_classes: int,
                   use_ema: bool = False, flip_tta: bool = False) -> Callable[..., Any]:
  """Builds `eval_step(state, batch) -> dict` with masked sums and per-example logits
  (`use_ema`: evaluate the weight average when the state keeps one; `flip_tta`: average
  the prediction with the mirrored image's, `carjax.models.tta`)."""

  def eval_step(state: TrainState, batch):
    apply = lambda pixels: models.apply_pixels(model, state.eval_variables(use_ema), pixels,
                                               input_spec, train=False)
    logits = (tta.flip_averaged_logits(apply, batch["image"]) if flip_tta
              else apply(batch["image"]))
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

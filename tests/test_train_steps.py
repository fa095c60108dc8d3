"""carjax/train/steps.py: the loss, class weights, and the train step (overfits one batch;
frozen parameters stay put and lose their backward pass)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carjax.train import steps
from tests import helpers


def _deterministic_tiny_config():
  """The tiny CNN's config with augmentation, dropout and warm-up off: the step sees the
  batch as it is and learns from step 0."""
  config = helpers.tiny_cnn_config("unused")
  config.data.augment.crop_scale = (1.0, 1.0)
  config.data.augment.crop_ratio = (1.0, 1.0)
  config.data.augment.flip = False
  config.data.augment.color_jitter = 0.0
  config.model.dropout_rate = 0.0
  config.train.warmup_epochs = 0.0
  return config


def _train_on_one_batch(config, num_steps: int = 60):
  """(final state, the objective at each step, the last step's metrics) of `config`'s tiny
  CNN trained `num_steps` times on one fixed batch of 8 random photos of 4 classes, at lr
  1e-2 without weight decay."""
  config.train.weight_decay = 0.0
  config.train.num_epochs = 100
  config.train.learning_rate = 1e-2
  setup, state = helpers.initial_state(config, 4, 1)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (8, 32, 32, 3)).astype(np.uint8),
           "label": np.array([0, 1, 2, 3, 0, 1, 2, 3], np.int32)}
  step = jax.jit(helpers.plain_train_step(config, setup.model, 4, (127.5,) * 3, (64.0,) * 3))
  losses = []
  for _ in range(num_steps):
    state, m = step(state, batch, jax.random.key(0))
    losses.append(float(m["loss_sum"] / m["count"]))
  return state, losses, m


def test_overfits_one_batch():
  config = _deterministic_tiny_config()
  config.train.label_smoothing = 0.0
  _, losses, m = _train_on_one_batch(config)
  assert losses[0] > 1.0
  assert losses[-1] < 0.05
  assert int(m["correct"]) == 8


def test_cross_entropy_matches_definition_and_weights():
  logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
  labels = jnp.array([0, 2])
  mean, per_example = steps.cross_entropy(logits, labels, 3)
  expected = -jax.nn.log_softmax(logits)[jnp.arange(2), labels]
  np.testing.assert_allclose(per_example, expected, rtol=1e-6)
  weighted, _ = steps.cross_entropy(logits, labels, 3, example_weights=jnp.array([1.0, 3.0]))
  np.testing.assert_allclose(weighted, (expected[0] + 3 * expected[1]) / 4, rtol=1e-6)


def test_class_weights_balance_the_classes():
  weights = steps.class_weights_for(np.array([0, 0, 0, 1]), 3)
  np.testing.assert_allclose(weights, [4 / 9, 4 / 3, 0.0], rtol=1e-6)


def test_frozen_parameters_never_move_and_their_backward_is_dropped():
  config = helpers.tiny_cnn_config("unused")
  config.train.frozen_params = r"^stage1/"
  setup, state = helpers.initial_state(config, 3, 2)
  model = setup.model
  step = jax.jit(helpers.plain_train_step(config, model, 3, (127.5,) * 3, (64.0,) * 3))
  batch = {"image": np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8),
           "label": np.array([0, 1, 2, 0], np.int32)}
  new_state, _ = step(jax.tree.map(jnp.copy, state), batch, jax.random.key(0))
  new_state, _ = step(new_state, batch, jax.random.key(0))  # Step 0's warm-up rate is 0.
  frozen_same = jax.tree.map(jnp.array_equal, state.params["stage1"], new_state.params["stage1"])
  assert all(jax.tree.leaves(frozen_same))
  assert not jnp.array_equal(state.params["stage2"]["conv0"]["kernel"],
                             new_state.params["stage2"]["conv0"]["kernel"])
  # No convolution gradient w.r.t. stage 1's kernels remains in the compiled step.
  hlo = step.lower(state, batch, jax.random.key(0)).compile().as_text()
  unfrozen_config = helpers.tiny_cnn_config("unused")
  setup2, state2 = helpers.initial_state(unfrozen_config, 3, 2)
  model2 = setup2.model
  step2 = jax.jit(helpers.plain_train_step(unfrozen_config, model2, 3, (127.5,) * 3,
                                               (64.0,) * 3))
  hlo2 = step2.lower(state2, batch, jax.random.key(0)).compile().as_text()
  assert hlo.count("convolution(") < hlo2.count("convolution(")


def _aux_setup(aux_loss_weight: float, **model_options):
  """A tiny CNN with a 5-class aux head, augmentation and dropout off, learning from step 0."""
  config = _deterministic_tiny_config()
  config.train.aux_loss_weight = aux_loss_weight
  for key, value in model_options.items():
    config.model[key] = value
  setup, state = helpers.initial_state(config, 3, 2, aux_classes=5)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (4, 32, 32, 3)).astype(np.uint8),
           "label": np.array([0, 1, 2, 0], np.int32),
           "aux_label": np.array([4, 1, 3, 0], np.int32)}
  return config, setup, state, batch


def _smoothed_cross_entropy(logits, labels, num_classes, smoothing):
  targets = (1 - smoothing) * jax.nn.one_hot(labels, num_classes) + smoothing / num_classes
  return float(jnp.mean(-jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1)))


def test_aux_loss_is_make_loss_plus_weighted_aux_loss_by_hand():
  config, setup, state, batch = _aux_setup(0.3)
  mean, std = (127.5,) * 3, (64.0,) * 3
  (logits, aux_logits), _ = setup.model.apply(
      {"params": state.params, "batch_stats": state.batch_stats},
      (batch["image"].astype(np.float32) - 127.5) / 64.0, train=True, return_aux=True,
      mutable=["batch_stats"])
  smoothing = config.train.label_smoothing
  assert smoothing == 0.1
  expected = (_smoothed_cross_entropy(logits, batch["label"], 3, smoothing)
              + 0.3 * _smoothed_cross_entropy(aux_logits, batch["aux_label"], 5, smoothing))
  step = jax.jit(helpers.plain_train_step(config, setup.model, 3, mean, std, aux_classes=5))
  _, m = step(jax.tree.map(jnp.copy, state), batch, jax.random.key(0))
  np.testing.assert_allclose(float(m["loss_sum"] / m["count"]), expected, rtol=1e-4)
  # The logged cross-entropy and accuracy are the makes' alone.
  np.testing.assert_allclose(float(m["ce_sum"] / m["count"]),
                             _smoothed_cross_entropy(logits, batch["label"], 3, 0.0), rtol=1e-4)
  assert int(m["correct"]) == int(jnp.sum(jnp.argmax(logits, -1) == batch["label"]))
  assert int(m["aux_correct"]) == int(jnp.sum(jnp.argmax(aux_logits, -1) == batch["aux_label"]))


def _one_step(config, setup, state, batch, aux_classes=5):
  step = jax.jit(helpers.plain_train_step(config, setup.model, 3, (127.5,) * 3, (64.0,) * 3,
                                          aux_classes=aux_classes))
  return step(jax.tree.map(jnp.copy, state), batch, jax.random.key(0))[0]


def test_the_aux_loss_moves_the_aux_head_and_through_it_the_backbone():
  config, setup, state, batch = _aux_setup(0.5)
  trained = _one_step(config, setup, state, batch)
  # Biases are not weight-decayed: only a gradient moves them.
  assert not np.array_equal(np.asarray(state.params["aux_head"]["bias"]),
                            np.asarray(trained.params["aux_head"]["bias"]))
  baseline_setup, baseline_state = helpers.initial_state(config, 3, 2)
  batch_without = {k: v for k, v in batch.items() if k != "aux_label"}
  baseline = _one_step(config, baseline_setup, baseline_state, batch_without, aux_classes=0)
  assert not np.array_equal(np.asarray(baseline.params["stage1"]["conv0"]["kernel"]),
                            np.asarray(trained.params["stage1"]["conv0"]["kernel"]))


def test_a_zero_aux_weight_trains_the_makes_exactly_as_a_model_without_aux_head():
  # Adding the head changes no other parameter's initial value, nor the dropout masks: with
  # weight 0 the make model is the baseline's, bit for bit (a clean ablation).
  config, setup, state, batch = _aux_setup(0.0)
  trained = _one_step(config, setup, state, batch)
  assert np.array_equal(np.asarray(state.params["aux_head"]["bias"]),
                        np.asarray(trained.params["aux_head"]["bias"]))
  baseline_setup, baseline_state = helpers.initial_state(config, 3, 2)
  del batch["aux_label"]
  baseline = _one_step(config, baseline_setup, baseline_state, batch, aux_classes=0)
  trained_makes = {k: v for k, v in trained.params.items() if k != "aux_head"}
  same = jax.tree.map(lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))),
                      baseline.params, trained_makes)
  assert all(jax.tree.leaves(same))


def test_aux_loss_accumulated_over_micro_batches_equals_the_whole_batch():
  config, setup, state, batch = _aux_setup(0.5, use_batchnorm=False)
  # SGD: the update is proportional to the gradient (Adam's first step is nearly its sign).
  config.train.optimizer = "sgd"
  setup, state = helpers.initial_state(config, 3, 2, aux_classes=5)
  results = []
  for accum in (1, 2):
    config.train.grad_accum_steps = accum
    step = jax.jit(helpers.plain_train_step(config, setup.model, 3, (127.5,) * 3, (64.0,) * 3,
                                            aux_classes=5))
    results.append(step(jax.tree.map(jnp.copy, state), batch, jax.random.key(0)))
  (whole, m1), (accumulated, m2) = results
  np.testing.assert_allclose(float(m1["loss_sum"]), float(m2["loss_sum"]), rtol=1e-5)
  assert int(m1["aux_correct"]) == int(m2["aux_correct"])
  for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(accumulated.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mix, fold", [("cutmix", 2), ("mixup", 3)])
def test_mixed_loss_weighs_each_label_by_its_share_by_hand(mix, fold):
  """CutMix weighs by the share of the image's own pixels, mixup by λ: both as `kept`."""
  from carjax.data import augment  # pylint: disable=g-import-not-at-top
  config, setup, state, batch = _aux_setup(0.3)
  config.data.augment[f"{mix}_prob"] = 1.0
  config.data.augment[f"{mix}_alpha"] = 1.0
  # The step's draws, from their own key (step 0 of key 0, folded with `fold`).
  images = augment.augment_batch(jax.random.split(jax.random.fold_in(jax.random.key(0), 0))[0],
                                 batch["image"], out_size=(32, 32), scale=(1.0, 1.0),
                                 ratio=(1.0, 1.0), flip=False, jitter=0.0)
  mixed, partner, kept = getattr(augment, mix)(jax.random.fold_in(jax.random.fold_in(
      jax.random.key(0), 0), fold), images, alpha=1.0, prob=1.0)
  partner, kept = np.asarray(partner), np.asarray(kept)
  assert 0.0 < kept[0] < 1.0 and np.any(batch["label"][partner] != batch["label"])
  (logits, aux_logits), _ = setup.model.apply(
      {"params": state.params, "batch_stats": state.batch_stats}, (mixed - 127.5) / 64.0,
      train=True, return_aux=True, mutable=["batch_stats"])
  per_example = lambda lg, lb, k: -jnp.sum(
      ((1 - 0.1) * jax.nn.one_hot(lb, k) + 0.1 / k) * jax.nn.log_softmax(lg), axis=-1)
  own = (per_example(logits, batch["label"], 3)
         + 0.3 * per_example(aux_logits, batch["aux_label"], 5))
  theirs = (per_example(logits, batch["label"][partner], 3)
            + 0.3 * per_example(aux_logits, batch["aux_label"][partner], 5))
  expected = float(jnp.mean(kept * own + (1 - kept) * theirs))
  step = jax.jit(helpers.plain_train_step(config, setup.model, 3, (127.5,) * 3, (64.0,) * 3,
                                          aux_classes=5))
  _, m = step(jax.tree.map(jnp.copy, state), batch, jax.random.key(0))
  np.testing.assert_allclose(float(m["loss_sum"] / m["count"]), expected, rtol=1e-4)
  # Accuracy still compares with each image's own make.
  assert int(m["correct"]) == int(jnp.sum(jnp.argmax(logits, -1) == batch["label"]))


def test_cosine_loss_is_one_minus_the_cosine_to_the_one_hot_label_whatever_the_scale():
  logits = jnp.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])
  labels = jnp.array([1, 0])
  expected = np.array([1 - 4 / 5, 1 - 1 / np.sqrt(6)])
  np.testing.assert_allclose(steps.cosine_loss(logits, labels), expected, rtol=1e-6)
  np.testing.assert_allclose(steps.cosine_loss(7.0 * logits, labels), expected, rtol=1e-6)
  assert np.isfinite(steps.cosine_loss(jnp.zeros((1, 3)), jnp.array([0]))).all()


def test_cosine_objective_is_cosine_plus_weighted_smoothed_cross_entropy():
  logits = jnp.array([[2.0, 0.5, -1.0], [0.0, 1.0, 0.3]])
  labels = jnp.array([0, 2])
  loss = steps.make_per_example_loss(3, 0.1, 0, 0.0, cosine_ce_weight=0.25)
  by_hand = (steps.cosine_loss(logits, labels)
             + 0.25 * steps.cross_entropy(logits, labels, 3, 0.1)[1])
  np.testing.assert_allclose(loss((logits, None), {"label": labels}), by_hand, rtol=1e-6)
  plain = steps.make_per_example_loss(3, 0.1, 0, 0.0)
  np.testing.assert_allclose(plain((logits, None), {"label": labels}),
                             steps.cross_entropy(logits, labels, 3, 0.1)[1], rtol=1e-6)


def test_cosine_head_and_loss_overfit_one_batch():
  config = _deterministic_tiny_config()
  config.model.head_type = "cosine"
  config.train.loss = "cosine"
  state, losses, m = _train_on_one_batch(config)
  # The objective starts near 1 (cosine ~0) + 0.1 × ln 4 and ends with every cosine near 1.
  assert losses[0] > 0.8
  assert losses[-1] < 0.1
  assert int(m["correct"]) == 8
  # The scale is learned: label smoothing 0.1 over 4 classes wants a logit gap of
  # ln(0.925 / 0.025) ≈ 3.6, far less than s = 10 gives, so its cross-entropy pulls s down.
  assert float(state.params["head_log_scale"]) < np.log(10.0) - 0.1

"""carjax/train/steps.py: the loss, class weights, and the train step (overfits one batch;
frozen parameters stay put and lose their backward pass)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from carjax.train import steps
from tests import helpers


def test_overfits_one_batch():
  config = helpers.tiny_cnn_config("unused")
  config.data.augment.crop_scale = (1.0, 1.0)
  config.data.augment.crop_ratio = (1.0, 1.0)
  config.data.augment.flip = False
  config.data.augment.color_jitter = 0.0
  config.model.dropout_rate = 0.0
  config.train.label_smoothing = 0.0
  config.train.warmup_epochs = 0.0
  config.train.weight_decay = 0.0
  config.train.num_epochs = 100
  config.train.learning_rate = 1e-2
  setup, state = helpers.initial_state(config, 4, 1)
  model = setup.model
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (8, 32, 32, 3)).astype(np.uint8),
           "label": np.array([0, 1, 2, 3, 0, 1, 2, 3], np.int32)}
  step = jax.jit(helpers.plain_train_step(config, model, 4, (127.5,) * 3, (64.0,) * 3))
  losses = []
  for _ in range(60):
    state, m = step(state, batch, jax.random.key(0))
    losses.append(float(m["loss_sum"] / m["count"]))
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

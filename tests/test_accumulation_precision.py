"""Gradient accumulation equals one larger batch; bfloat16 compute trains and tracks float32.

Accumulation's definition (carjax/train/steps.py): the whole batch's gradient, k micro-batches
at a time; BatchNorm normalises each micro-batch with its own statistics and the running
statistics take one update with the micro-batches' averaged mean and variance.
"""

import jax
import jax.numpy as jnp
import numpy as np

from configs import custom_cnn
from tests import helpers

MEAN, STD = (127.5,) * 3, (64.0,) * 3


def _config(**model):
  config = custom_cnn.get_config("tiny").unlock()
  config.model.dropout_rate = 0.0  # Dropout masks are drawn per micro-batch.
  config.train.warmup_epochs = 0.0
  config.train.learning_rate = 1e-2
  for key, value in model.items():
    config.model[key] = value
  return config


_INIT = {}


def _state(config, num_classes=3):
  """The model and its initial state (the same for every accumulation setting)."""
  key = config.model.to_json()
  if key not in _INIT:
    _INIT[key] = _initial_state(config, num_classes)
  return _INIT[key]


def _initial_state(config, num_classes):
  setup, state = helpers.initial_state(config, num_classes, 10)
  return setup.model, state


def _batch(size, seed=0, num_classes=3):
  """Noisy images whose label is their brightest colour channel: learnable in a few steps."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, size).astype(np.int32)
  images = rng.integers(0, 120, (size, 32, 32, 3))
  images[np.arange(size), :, :, labels] += 120
  return {"image": images.astype(np.uint8), "label": labels}


_STEPS = {}  # One compiled step per (config, accumulation), shared by the tests' runs.


def _train(config, batches, accum, class_weights=None):
  config = config.copy_and_resolve_references()
  config.train.grad_accum_steps = accum
  model, state = _state(config)
  key = (config.to_json(), None if class_weights is None else tuple(class_weights))
  if key not in _STEPS:
    _STEPS[key] = jax.jit(helpers.plain_train_step(config, model, 3, MEAN, STD,
                                                     class_weights=class_weights))
  step = _STEPS[key]
  losses = []
  for batch in batches:
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(float(metrics["loss_sum"] / metrics["count"]))
  return jax.device_get(state), losses


def _max_difference(a, b):
  return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), a, b)))


def test_four_micro_batches_equal_one_four_times_larger_batch():
  # No BatchNorm: the only definition-dependent part; augmentation and class weights on.
  config = _config(use_batchnorm=False)
  batches = [_batch(16, seed) for seed in range(3)]
  weights = np.array([0.5, 1.0, 2.0], np.float32)
  whole, whole_losses = _train(config, batches, accum=1, class_weights=weights)
  accumulated, accum_losses = _train(config, batches, accum=4, class_weights=weights)
  np.testing.assert_allclose(accum_losses, whole_losses, rtol=1e-5)
  assert _max_difference(accumulated.params, whole.params) < 1e-5
  assert _max_difference(accumulated.opt_state, whole.opt_state) < 1e-5
  moved = _max_difference(accumulated.params, _state(config)[1].params)
  assert moved > 1e-2  # The steps did change the parameters.


def test_batchnorm_micro_batches_use_their_own_statistics_and_average_the_update():
  config = _config()
  config.data.augment.crop_scale = (1.0, 1.0)
  config.data.augment.crop_ratio = (1.0, 1.0)
  config.data.augment.flip = False
  config.data.augment.color_jitter = 0.0
  # Four identical micro-batches (rows i, i+4, ... of a batch where each image appears 4
  # times in a row): accumulating them is exactly one step on one of them. Applying the
  # running-statistics update 4 times, or normalising with other statistics, would not be.
  small = _batch(4)
  repeated = {k: np.repeat(v, 4, axis=0) for k, v in small.items()}
  one, _ = _train(config, [small] * 2, accum=1)
  accumulated, _ = _train(config, [repeated] * 2, accum=4)
  assert _max_difference(accumulated.params, one.params) < 1e-5
  assert _max_difference(accumulated.batch_stats, one.batch_stats) < 1e-6

  # Distinct micro-batches: the first BatchNorm's running mean is the whole batch's (the
  # mean of equal-sized micro-batch means), its running variance the mean within-micro-batch
  # variance, which is smaller than the whole batch's.
  batch = _batch(16, seed=5)
  whole, _ = _train(config, [batch], accum=1)
  accumulated, _ = _train(config, [batch], accum=4)
  first_bn = lambda s: s.batch_stats["stage1"]["bn0"]
  np.testing.assert_allclose(first_bn(accumulated)["mean"], first_bn(whole)["mean"],
                             atol=1e-6)
  assert np.all(first_bn(accumulated)["var"] <= first_bn(whole)["var"] + 1e-6)
  assert np.any(first_bn(accumulated)["var"] < first_bn(whole)["var"] - 1e-4)


def test_bfloat16_compute_trains_and_tracks_float32():
  batches = [_batch(16, seed % 2) for seed in range(12)]
  f32_state, f32_losses = _train(_config(), batches, accum=1)
  bf16_config = _config(dtype="bfloat16")
  bf16_state, bf16_losses = _train(bf16_config, batches, accum=1)
  assert bf16_losses[-1] < 0.6 * bf16_losses[0]  # It trains.
  # Stated tolerance: the per-step loss of bfloat16 compute stays within 0.03 (absolute,
  # cross-entropy between 1.0 and 0.3 here) of float32's; measured: at most 0.008.
  np.testing.assert_allclose(bf16_losses, f32_losses, atol=0.03)
  # Parameters and optimiser state stay float32; the convolutions run in bfloat16.
  dtypes = {x.dtype for x in jax.tree.leaves((bf16_state.params, bf16_state.opt_state))
            if jnp.issubdtype(x.dtype, jnp.floating)}
  assert dtypes == {jnp.dtype(jnp.float32)}
  model, state = _state(bf16_config)
  hlo = jax.jit(helpers.plain_train_step(bf16_config, model, 3, MEAN, STD)).lower(
      state, batches[0], jax.random.key(1)).as_text()
  assert "stablehlo.convolution" in hlo
  conv_lines = [l for l in hlo.splitlines() if "stablehlo.convolution" in l]
  assert all("bf16" in l for l in conv_lines)

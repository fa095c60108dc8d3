"""The custom CNN: output shapes, pinned parameter counts, feature maps, dtype."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carjax import models
from carjax.data import decode
from carjax.models.cnn import CustomCNN
from configs import custom_cnn


def _count(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def _init(model, size):
  height, width = decode.image_hw(size)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, height, width, 3)),
                                           train=False))


def test_reference_config_parameter_count_is_pinned():
  config = custom_cnn.get_config()
  model = models.build_model(config.model, num_classes=20)
  variables = _init(model, config.data.image_size)
  # 5 stages × 2 convs (no bias, BN scale+offset), a 256-wide hidden layer and a 20-way head.
  widths, prev, expected = (32, 64, 128, 256, 384), 3, 0
  for w in widths:
    expected += 9 * prev * w + 2 * w + 9 * w * w + 2 * w
    prev = w
  expected += prev * 256 + 256 + 256 * 20 + 20
  assert _count(variables["params"]) == expected == 3_490_292


def test_flatten_head_counts_every_position():
  model = CustomCNN(num_classes=5, stage_widths=(4, 8), convs_per_stage=1, dense_widths=(),
                    global_pool="flatten", use_batchnorm=False)
  variables = _init(model, 16)
  # Two 2×2 poolings: 16 → 4, so the head sees 4·4·8 inputs.
  assert variables["params"]["head"]["kernel"].shape == (4 * 4 * 8, 5)
  assert variables["params"]["stage1"]["conv0"]["bias"].shape == (4,)


def test_shapes_features_and_intermediates():
  model = CustomCNN(num_classes=7, stage_widths=(4, 8, 16), convs_per_stage=2, stem_stride=2,
                    dense_widths=(12,))
  x = jax.random.normal(jax.random.key(1), (3, 64, 64, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  logits, state = model.apply(variables, x, train=False, mutable=["intermediates"])
  assert logits.shape == (3, 7) and logits.dtype == jnp.float32
  feats = model.apply(variables, x, train=False, method=model.features)
  # stride-2 stem then three poolings: 64 → 32 → 16 → 8 → 4.
  assert feats.shape == (3, 4, 4, 16)
  again = model.apply(variables, feats, train=False, method=model.classify)
  assert jnp.allclose(again, logits, atol=1e-5)
  inter = state["intermediates"]
  assert set(inter) == {"stage1", "stage2", "stage3"}
  assert inter["stage1"]["after_conv0"][0].shape == (3, 32, 32, 4)
  assert inter["stage1"]["after_pool"][0].shape == (3, 16, 16, 4)


def test_train_mode_uses_dropout_and_updates_batch_stats():
  model = CustomCNN(num_classes=3, stage_widths=(4,), convs_per_stage=1, dense_widths=(8,),
                    dropout_rate=0.5)
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3)) * 3 + 1
  variables = model.init(jax.random.key(0), x, train=False)
  run = lambda k: model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(k)},
                              mutable=["batch_stats"])
  (a, updated), (b, _) = run(1), run(2)
  assert not jnp.allclose(a, b)
  old = variables["batch_stats"]["stage1"]["bn0"]["mean"]
  assert not jnp.allclose(updated["batch_stats"]["stage1"]["bn0"]["mean"], old)


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = CustomCNN(num_classes=3, stage_widths=(4,), convs_per_stage=1, dense_widths=(),
                    dtype=jnp.bfloat16)
  x = jnp.ones((2, 8, 8, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  assert variables["params"]["head"]["kernel"].dtype == jnp.float32
  assert model.apply(variables, x, train=False).dtype == jnp.float32


def test_bad_option_is_named():
  model = CustomCNN(num_classes=3, stage_widths=(4,), pooling="median")
  with pytest.raises(ValueError, match="config.model.pooling"):
    model.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)), train=False)


def test_frozen_batchnorm_keeps_running_statistics_in_training():
  model = CustomCNN(num_classes=3, stage_widths=(4,), convs_per_stage=1, dense_widths=(),
                    dropout_rate=0.0, freeze_batchnorm=True)
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3)) * 3 + 1
  variables = model.init(jax.random.key(0), x, train=False)
  train_out, updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert jax.tree.all(jax.tree.map(jnp.array_equal, updated["batch_stats"],
                                   variables["batch_stats"]))
  assert jnp.allclose(train_out, model.apply(variables, x, train=False))


def test_aux_head_adds_features_times_aux_classes_plus_bias():
  config = custom_cnn.get_config()
  plain = _count(_init(models.build_model(config.model, num_classes=20),
                       config.data.image_size)["params"])
  model = models.build_model(config.model, num_classes=20, aux_classes=153)
  params = jax.eval_shape(lambda: models.init_variables(
      model, decode.image_hw(config.data.image_size), jax.random.key(0)))["params"]
  # The aux head sits on the 256-wide hidden layer, as the make head does.
  assert params["aux_head"]["kernel"].shape == (256, 153)
  assert _count(params) - plain == 256 * 153 + 153 == 39_321
  assert _count(params) == 3_490_292 + 39_321


def test_cosine_head_adds_one_scale_and_gives_logits_of_that_norm():
  config = custom_cnn.get_config()
  config.model.head_type = "cosine"
  model = models.build_model(config.model, num_classes=20)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
  assert _count(variables["params"]) == 3_490_292 + 1  # One learned scalar: log s.
  np.testing.assert_allclose(variables["params"]["head_log_scale"], np.log(10.0), rtol=1e-6)
  images = jax.random.normal(jax.random.key(1), (3, 64, 64, 3))
  logits = model.apply(variables, images, train=False)
  np.testing.assert_allclose(jnp.linalg.norm(logits, axis=-1), 10.0, rtol=1e-5)
  # The direction is the linear head's: same weights, the plain head's logits normalised.
  linear = models.build_model(custom_cnn.get_config().model, num_classes=20)
  plain_params = {k: v for k, v in variables["params"].items() if k != "head_log_scale"}
  raw = linear.apply({**variables, "params": plain_params}, images, train=False)
  np.testing.assert_allclose(logits, 10.0 * raw / jnp.linalg.norm(raw, axis=-1, keepdims=True),
                             rtol=1e-4, atol=1e-5)
  doubled = {**variables["params"], "head_log_scale": jnp.log(20.0)}
  np.testing.assert_allclose(model.apply({**variables, "params": doubled}, images, train=False),
                             2 * logits, rtol=1e-4, atol=1e-5)

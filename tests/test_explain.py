"""Grad-CAM and feature maps (carjax/explain.py), and the study's feature-map figure."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carjax import explain
from carjax import models
from carjax.study import model_figures
from configs import custom_cnn
from configs import efficientnet_lite0_finetune
from configs import study as study_config


# ------------------------------------------------------------------------------ Grad-CAM


class _TwoChannelModel(nn.Module):
  """Features = the input; logit k = the spatial mean of channel k (no parameters)."""

  def features(self, x, *, train):
    del train
    return x

  def classify(self, features, *, train):
    del train
    return jnp.mean(features, axis=(1, 2))

  def __call__(self, x, *, train):
    return self.classify(self.features(x, train=train), train=train)


def test_gradcam_localises_the_evidence_of_each_class():
  image = np.zeros((1, 8, 8, 2), np.float32)
  image[0, :3, :3, 0] = 2.0  # class 0's evidence: top left (the stronger: predicted)
  image[0, 5:, 5:, 1] = 1.0  # class 1's evidence: bottom right
  model = _TwoChannelModel()
  cams, logits = explain.gradcam(model, {}, jnp.asarray(image))
  assert int(np.argmax(logits[0])) == 0
  np.testing.assert_allclose(cams[0], image[0, ..., 0] / 2.0, atol=1e-6)
  cams, _ = explain.gradcam(model, {}, jnp.asarray(image), target_classes=[1])
  np.testing.assert_allclose(cams[0], image[0, ..., 1], atol=1e-6)
  peak = np.unravel_index(np.argmax(explain.upsample(cams[0], 32)), (32, 32))
  assert peak[0] >= 20 and peak[1] >= 20


def test_gradcam_ignores_negative_evidence_and_blank_maps():
  image = np.zeros((2, 4, 4, 2), np.float32)
  image[0, 0, 0, 0] = 1.0
  image[1] = 0.0  # No evidence anywhere: an all-zero map, not NaN.
  model = _TwoChannelModel()
  cams, _ = explain.gradcam(model, {}, jnp.asarray(image), target_classes=[1, 1])
  assert np.all(np.asarray(cams) == 0.0)


def _tiny_cnn():
  config = custom_cnn.get_config("tiny")
  model = models.build_model(config.model, 3)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
  return model, variables


def test_gradcam_on_the_custom_cnn_has_the_last_feature_map_shape():
  model, variables = _tiny_cnn()
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  cams, logits = explain.gradcam(model, variables, x)
  assert cams.shape == (2, 4, 4)  # stem stride 2 and two 2×2 poolings: 32 / 8
  assert float(jnp.min(cams)) >= 0.0 and float(jnp.max(cams)) <= 1.0
  np.testing.assert_allclose(logits, model.apply(variables, x, train=False), rtol=1e-5)


def test_gradcam_at_a_named_layer_matches_the_default_at_the_last_one():
  model, variables = _tiny_cnn()
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  default_cams, default_logits = explain.gradcam(model, variables, x)
  last_cams, last_logits = explain.gradcam(model, variables, x, layer="stage2")
  np.testing.assert_allclose(last_cams, default_cams, atol=1e-6)
  np.testing.assert_allclose(last_logits, default_logits, rtol=1e-6)
  finer_cams, finer_logits = explain.gradcam(model, variables, x, layer="stage1")
  assert finer_cams.shape == (2, 8, 8)
  # Swapping a layer's output for itself must leave the network's output unchanged.
  np.testing.assert_allclose(finer_logits, default_logits, rtol=1e-6)
  assert float(jnp.max(default_cams)) == 1.0 and float(jnp.max(finer_cams)) == 1.0
  assert not np.allclose(explain.upsample(finer_cams[0], 8),
                         explain.upsample(default_cams[0], 8), atol=0.05)


def test_gradcam_names_a_layer_the_model_does_not_have():
  model, variables = _tiny_cnn()
  with pytest.raises(ValueError, match="'stage9'.*0 times"):
    explain.gradcam(model, variables, jnp.zeros((1, 32, 32, 3)), layer="stage9")


# --------------------------------------------------------------------------- feature maps


def test_feature_maps_of_the_custom_cnn_follow_its_layers(tmp_path):
  model, variables = _tiny_cnn()
  x = np.asarray(jax.random.normal(jax.random.key(1), (2, 32, 32, 3)))
  maps = explain.feature_maps(model, variables, x)
  assert [(n, m.shape) for n, m in maps] == [
      ("stage1/after_conv0", (2, 16, 16, 8)), ("stage1/after_pool", (2, 8, 8, 8)),
      ("stage2/after_conv0", (2, 8, 8, 16)), ("stage2/after_pool", (2, 4, 4, 16))]
  np.testing.assert_allclose(maps[-1][1], model.apply(variables, x, train=False,
                                                      method=model.features), rtol=1e-5)
  assert [n for n, _ in explain.select_layers(maps, ("stage2/after_pool",))] == [
      "stage2/after_pool"]
  assert explain.select_layers(maps, ()) == maps
  strongest = explain.strongest_channels(maps[0][1][0], 3)
  means = maps[0][1][0].mean(axis=(0, 1))
  assert list(strongest) == list(np.argsort(-means)[:3])
  photo = np.zeros((32, 32, 3), np.uint8)
  path = model_figures.plot_feature_maps(photo, [(n, m[0]) for n, m in maps], 4, "t",
                                         str(tmp_path / "maps.png"))
  assert os.path.getsize(path) < 300_000


@pytest.mark.slow
def test_feature_maps_and_gradcam_of_a_tiny_efficientnet():
  config = efficientnet_lite0_finetune.get_config("tiny")
  model = models.build_model(config.model, 3)
  x = jax.random.normal(jax.random.key(1), (1, 32, 32, 3))
  variables = jax.jit(lambda r: model.init(r, x, train=False))(jax.random.key(0))
  maps = explain.feature_maps(model, variables, np.asarray(x))
  assert [n for n, _ in maps] == ["stem"] + [f"stage{i}" for i in range(1, 8)] + ["head_conv"]
  assert maps[0][1].shape[:3] == (1, 16, 16)
  wanted = study_config.get_config("tiny").report.feature_map_layers.tiny_efficientnet
  assert [n for n, _ in explain.select_layers(maps, wanted)] == list(wanted)
  cams, _ = jax.jit(lambda v, x: explain.gradcam(model, v, x))(variables, x)
  assert cams.shape == maps[-1][1].shape[:3]

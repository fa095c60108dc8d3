"""The models' input contract: normalisation, applying a model to pixels, initialisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from carjax import models
from carjax.models.cnn import CustomCNN


def test_normalize():
  x = jnp.full((1, 2, 2, 3), 127.0)
  y = models.InputSpec((127.0, 100.0, 0.0), (128.0, 27.0, 127.0)).normalize(x)
  np.testing.assert_allclose(np.asarray(y[0, 0, 0]), [0.0, 1.0, 1.0], atol=1e-6)


def test_input_spec_from_config_keeps_the_compute_dtype():
  config = ml_collections.ConfigDict({"input_mean": (1.0, 2.0, 3.0),
                                      "input_std": (4.0, 5.0, 6.0), "dtype": "bfloat16"})
  spec = models.InputSpec.from_config(config)
  assert spec.mean == (1.0, 2.0, 3.0) and spec.std == (4.0, 5.0, 6.0)
  assert spec.normalize(jnp.zeros((1, 1, 1, 3), jnp.uint8)).dtype == jnp.bfloat16


def test_apply_pixels_is_apply_on_normalised_input():
  model = CustomCNN(num_classes=3, stage_widths=(4,), convs_per_stage=1, dense_widths=())
  variables = models.init_variables(model, (16, 16), jax.random.key(0))
  assert variables["params"]["head"]["kernel"].shape[-1] == 3
  pixels = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), np.uint8)
  spec = models.InputSpec((120.0, 110.0, 100.0), (60.0, 50.0, 40.0))
  direct = model.apply(variables, (pixels.astype(np.float32) - np.array(spec.mean))
                       / np.array(spec.std), train=False)
  np.testing.assert_allclose(
      np.asarray(models.apply_pixels(model, variables, pixels, spec, train=False)),
      np.asarray(direct), rtol=1e-5, atol=1e-5)

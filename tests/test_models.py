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


def test_aux_head_reads_the_same_dropped_out_features_and_is_dropped_for_inference():
  model = CustomCNN(num_classes=3, stage_widths=(4,), convs_per_stage=1, dense_widths=(8,),
                    dropout_rate=0.5, aux_classes=5)
  variables = models.init_variables(model, (16, 16), jax.random.key(0))
  assert variables["params"]["aux_head"]["kernel"].shape == (8, 5)
  x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
  rngs = {"dropout": jax.random.key(2)}
  (logits, aux_logits), _ = model.apply(variables, x, train=True, rngs=rngs,
                                        return_aux=True, mutable=["batch_stats"])
  plain_call, _ = model.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])
  np.testing.assert_array_equal(np.asarray(plain_call), np.asarray(logits))
  # A model whose make head is the aux head, with the same dropout key, gives the aux logits:
  # both heads see the very same (dropped-out) features.
  swapped_model = CustomCNN(num_classes=5, stage_widths=(4,), convs_per_stage=1,
                            dense_widths=(8,), dropout_rate=0.5)
  params = {k: v for k, v in variables["params"].items() if k != "aux_head"}
  params["head"] = variables["params"]["aux_head"]
  swapped, _ = swapped_model.apply({**variables, "params": params}, x, train=True, rngs=rngs,
                                   mutable=["batch_stats"])
  np.testing.assert_allclose(np.asarray(swapped), np.asarray(aux_logits), rtol=1e-6)

  inference_model, inference_vars = models.without_aux_head(model, variables)
  assert inference_model.aux_classes == 0 and "aux_head" not in inference_vars["params"]
  np.testing.assert_array_equal(
      np.asarray(inference_model.apply(inference_vars, x, train=False)),
      np.asarray(model.apply(variables, x, train=False)))

"""Where a training step spends its time: an ablation profile (EfficientNet and the custom CNN).

The train step of a network is timed several times, each time with one kind of layer
implemented differently or replaced by a stand-in of the same shapes that costs almost
nothing, so the differences say what each kind costs inside the real, fused XLA program
(a per-op trace of an XLA CPU program attributes fused work poorly; removing the work does
not). Variants:

* ``shifted``: the project's model as it trains on CPU (depthwise as shifted slices).
* ``grouped``: depthwise through XLA's grouped convolution (``feature_group_count``).
* ``no_depthwise``: every depthwise convolution replaced by a per-channel scale of the
  (strided) input — same shapes and parameters, no spatial taps.
* ``no_depthwise_no_se``: additionally squeeze-and-excitation disabled.

What remains in the last variant is the 1×1 convolutions (matrix products), the stem and
head convolutions, BatchNorm, activations and the optimizer update.

* ``ynn_convolutions``: the project's model compiled with XLA's default CPU options
  (convolutions in YNNPACK) instead of carjax's per-model options.

The custom CNN (``configs/custom_cnn.py``'s architecture) has its own variants:

* ``cnn``: as the project trains it (2×2 max pooling as a reshape and a max).
* ``cnn_flax_max_pool``: pooling through ``nn.max_pool`` (XLA's reduce-window, whose
  backward is a select-and-scatter).
* ``cnn_no_batchnorm``: no BatchNorm layers.
* ``cnn_no_pool_cost``: pooling replaced by a strided slice (same shapes, no reduction).

Every step is compiled with `carjax.models.compiler_options` on this backend, as training is.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import flax.linen as nn
import ml_collections

from benchmarks import timing
from carjax import models
from carjax.models import cnn as cnn_lib
from carjax.models import depthwise as depthwise_lib
from carjax.models.efficientnet import efficientnet
from configs import custom_cnn

EFFICIENTNET_VARIANTS = ("shifted", "grouped", "no_depthwise", "no_depthwise_no_se",
                         "ynn_convolutions")
CNN_VARIANTS = ("cnn", "cnn_flax_max_pool", "cnn_no_batchnorm", "cnn_no_pool_cost")
VARIANTS = EFFICIENTNET_VARIANTS + CNN_VARIANTS


@contextlib.contextmanager
def depthwise_replaced_by_scale() -> Iterator[None]:
  """Within the block, every depthwise convolution is a per-channel scale of the strided
  input by the kernel's centre tap (same output shape, same parameters)."""
  original = depthwise_lib.depthwise_conv2d

  def scale_only(x, kernel, *, strides=1, padding="tf_same", implementation="auto"):
    del padding, implementation
    sh, sw = depthwise_lib._pair(strides)  # pylint: disable=protected-access
    kh, kw = kernel.shape[:2]
    return x[:, ::sh, ::sw, :] * kernel[kh // 2, kw // 2, 0]

  depthwise_lib.depthwise_conv2d = scale_only
  try:
    yield
  finally:
    depthwise_lib.depthwise_conv2d = original


@contextlib.contextmanager
def cnn_pooling_replaced(kind: str) -> Iterator[None]:
  """Within the block, the CNN pools with `nn.max_pool` ('flax') or a strided slice ('slice')."""
  original = cnn_lib.max_pool_2x2
  cnn_lib.max_pool_2x2 = ((lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))) if kind == "flax"
                          else (lambda x: x[:, ::2, ::2, :]))
  try:
    yield
  finally:
    cnn_lib.max_pool_2x2 = original


def _variant_context(variant: str):
  if variant.startswith("no_depthwise"):
    return depthwise_replaced_by_scale()
  if variant == "cnn_flax_max_pool":
    return cnn_pooling_replaced("flax")
  if variant == "cnn_no_pool_cost":
    return cnn_pooling_replaced("slice")
  return contextlib.nullcontext()


def _model_of(variant: str, model_variant: str, num_classes: int,
              model_overrides: dict[str, Any] | None = None):
  """(module, its config's `model` section) for a variant; `model_overrides` (e.g. width and
  depth) shrink the EfficientNet variants for the tests."""
  if variant in CNN_VARIANTS:
    # The architecture of configs/custom_cnn.py, without dropout (its cost is not profiled).
    config = custom_cnn.get_config().model.copy_and_resolve_references()
    config.dropout_rate = 0.0
    config.use_batchnorm = variant != "cnn_no_batchnorm"
    return models.build_model(config, num_classes), config
  overrides: dict[str, Any] = dict(model_overrides or {})
  if variant == "grouped":
    overrides["depthwise_implementation"] = "grouped"
  if variant == "no_depthwise_no_se":
    overrides["se"] = False
  config = ml_collections.ConfigDict({"name": "efficientnet"})
  return efficientnet(model_variant, num_classes, **overrides), config


def build_step(variant: str, *, model_variant: str = "b0", num_classes: int = 20,
               image_size: int = 224, batch_size: int = 32, seed: int = 0,
               model_overrides: dict[str, Any] | None = None):
  """(jitted step, state, batch) of a plain SGD training step of `model_variant` (EfficientNet
  variants) or of the custom CNN (`cnn*` variants)."""
  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
  model, model_config = _model_of(variant, model_variant, num_classes, model_overrides)
  options = (None if variant == "ynn_convolutions"
             else models.compiler_options(model_config, jax.default_backend()))
  rng = np.random.default_rng(seed)
  images = jnp.asarray(rng.normal(size=(batch_size, image_size, image_size, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, num_classes, batch_size))
  variables = jax.jit(lambda r: model.init(r, images[:1], train=False))(jax.random.key(seed))
  tx = optax.sgd(0.01, momentum=0.9)
  state = (variables["params"], variables.get("batch_stats", {}),
           tx.init(variables["params"]))

  def loss_fn(params, batch_stats, x, y):
    logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, x,
                                  train=True, mutable=["batch_stats"],
                                  rngs={"dropout": jax.random.key(0)})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, updates["batch_stats"]

  def step(state, x, y):
    params, batch_stats, opt_state = state
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

  return jax.jit(step, donate_argnums=(0,), compiler_options=options), state, (images, labels)


def time_variant(variant: str, *, repeats: int = 5, warmup: int = 2, **kwargs) -> dict:
  """Compile and time one variant: {'variant', 'compile_s', 'step_s' (all repeats),
  'median_step_s', 'images_per_s', 'loss'}."""
  with _variant_context(variant):
    step, state, (images, labels) = build_step(variant, **kwargs)
    t0 = time.perf_counter()
    compiled = step.lower(state, images, labels).compile()
    compile_s = time.perf_counter() - t0
  holder = {"state": state, "loss": None}

  def step_once():
    holder["state"], holder["loss"] = compiled(holder["state"], images, labels)
    return holder["loss"]

  sync = lambda loss: jax.block_until_ready((holder["state"], loss))
  times = timing.timed_repeats(step_once, sync, warmup=warmup, repeats=repeats, steps=1)
  median = float(np.median(times))
  return {"variant": variant, "compile_s": compile_s, "step_s": times,
          "median_step_s": median, "images_per_s": images.shape[0] / median,
          "loss": float(holder["loss"])}


def markdown(results: list[dict], *, title: str) -> str:
  """A table of the variants, with each one's share of the full model's step time."""
  base = next((r for r in results if r["variant"] in ("shifted", "cnn")), results[0])
  lines = [f"#### {title}", "",
           "| variant | step, ms (median) | images/s | vs the project's model | compile, s |",
           "|---|---:|---:|---:|---:|"]
  for r in results:
    lines.append(f"| {r['variant']} | {1000 * r['median_step_s']:.0f} | "
                 f"{r['images_per_s']:.1f} | {r['median_step_s'] / base['median_step_s']:.2f}× "
                 f"| {r['compile_s']:.1f} |")
  return "\n".join(lines) + "\n"

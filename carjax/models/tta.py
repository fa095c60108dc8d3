"""Test-time augmentation: a model's prediction averaged over an image and its mirror.

Cars are left-right symmetric in kind (a make is the same make seen from either side), and
training flips them at random; averaging the class probabilities of both views is a cheap
ensemble (twice the inference cost, no training). The result is returned as logits, the log
of the averaged probabilities, so that softmax, argmax and cross-entropy downstream see
exactly the averaged distribution.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def flip_averaged_logits(logits_fn: Callable[[jax.Array], jax.Array], images) -> jax.Array:
  """log((softmax(f(x)) + softmax(f(mirror x))) / 2) for images [N, H, W, C]."""
  # Two passes rather than one of a doubled batch, and lax.rev rather than a ::-1 slice: with
  # a symbolic batch size (the SavedModel export) both stay plain ops that TFLite converts.
  direct = jax.nn.log_softmax(logits_fn(images).astype(jnp.float32), axis=-1)
  mirrored = jax.nn.log_softmax(
      logits_fn(jax.lax.rev(images, (2,))).astype(jnp.float32), axis=-1)
  return jnp.logaddexp(direct, mirrored) - jnp.log(2.0)

"""carjax.models.tta: mirror-averaged predictions."""

import jax
import jax.numpy as jnp
import numpy as np

from carjax.models import tta


def test_flip_average_is_the_mean_of_both_views_probabilities():
  rng = np.random.default_rng(0)
  kernel = jnp.asarray(rng.normal(size=(4 * 6 * 3, 5)), jnp.float32)
  logits_fn = lambda x: x.reshape(x.shape[0], -1) @ kernel  # Not mirror-invariant.
  images = jnp.asarray(rng.normal(size=(2, 4, 6, 3)), jnp.float32)
  averaged = tta.flip_averaged_logits(logits_fn, images)
  expected = (jax.nn.softmax(logits_fn(images)) +
              jax.nn.softmax(logits_fn(images[:, :, ::-1]))) / 2
  np.testing.assert_allclose(jax.nn.softmax(averaged), expected, atol=1e-6)
  np.testing.assert_allclose(jnp.exp(averaged).sum(-1), 1.0, atol=1e-6)


def test_mirror_symmetric_images_are_unchanged():
  rng = np.random.default_rng(1)
  kernel = jnp.asarray(rng.normal(size=(4 * 6 * 3, 5)), jnp.float32)
  logits_fn = lambda x: x.reshape(x.shape[0], -1) @ kernel
  half = rng.normal(size=(1, 4, 3, 3))
  images = jnp.asarray(np.concatenate([half, half[:, :, ::-1]], axis=2), jnp.float32)
  np.testing.assert_allclose(tta.flip_averaged_logits(logits_fn, images),
                             jax.nn.log_softmax(logits_fn(images)), atol=1e-5)

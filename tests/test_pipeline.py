"""Batching: deterministic training order, every eval image exactly once, augmentation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carjax.data import augment, pipeline


def test_training_order_is_a_function_of_seed_and_step():
  images = np.arange(10)[:, None, None, None].repeat(2, 1).astype(np.uint8)
  labels = np.arange(10, dtype=np.int32)
  fresh = pipeline.train_batches(images, labels, 3, seed=7)
  first = [next(fresh)["label"] for _ in range(7)]
  resumed = pipeline.train_batches(images, labels, 3, seed=7, start_step=4)
  assert all(np.array_equal(next(resumed)["label"], first[s]) for s in range(4, 7))
  # One epoch (3 batches of 3) draws 9 distinct examples.
  assert len(set(np.concatenate(first[:3]).tolist())) == 9
  other_seed = pipeline.train_batches(images, labels, 3, seed=8)
  assert not all(np.array_equal(next(other_seed)["label"], first[s]) for s in range(3))


def test_eval_batches_cover_every_image_once_with_mask():
  labels = np.arange(10, dtype=np.int32)
  images = np.zeros((10, 2, 2, 3), np.uint8)
  batches = list(pipeline.eval_batches(images, labels, 4))
  assert [len(b["label"]) for b in batches] == [4, 4, 4]
  seen = np.concatenate([b["label"][b["mask"] > 0] for b in batches])
  assert sorted(seen.tolist()) == list(range(10))
  assert batches[-1]["mask"].tolist() == [1, 1, 0, 0]


def test_too_small_training_split_is_explained():
  with pytest.raises(ValueError, match="batch_size"):
    pipeline.steps_per_epoch(3, 8)


def test_augmentation_is_keyed_and_in_range():
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 20, 30, 3)), jnp.uint8)
  out = augment.augment_batch(jax.random.key(0), images, out_size=16)
  again = augment.augment_batch(jax.random.key(0), images, out_size=16)
  other = augment.augment_batch(jax.random.key(1), images, out_size=16)
  assert out.shape == (4, 16, 16, 3) and out.dtype == jnp.float32
  assert jnp.array_equal(out, again) and not jnp.allclose(out, other)
  assert float(out.min()) >= 0.0 and float(out.max()) <= 255.0


def test_full_crop_without_jitter_is_a_resize():
  image = jnp.asarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3)), jnp.float32)
  out = augment.augment_image(jax.random.key(3), image, out_size=16, scale=(1.0, 1.0),
                              ratio=(1.0, 1.0), flip=False, jitter=0.0)
  np.testing.assert_allclose(np.asarray(out), np.asarray(image), atol=1e-3)
def test_full_crop_of_a_non_square_canvas_is_a_resize():
  # ratio (1, 1) is relative to the canvas: the whole 12×24 image, not a stretched square.
  image = jnp.asarray(np.random.default_rng(0).integers(0, 256, (12, 24, 3)), jnp.float32)
  out = augment.augment_image(jax.random.key(3), image, out_size=(12, 24), scale=(1.0, 1.0),
                              ratio=(1.0, 1.0), flip=False, jitter=0.0)
  assert out.shape == (12, 24, 3)
  np.testing.assert_allclose(np.asarray(out), np.asarray(image), atol=1e-3)


def test_crops_of_a_wide_canvas_keep_its_proportions():
  # A left-to-right ramp: a box's horizontal extent shows in the output's value range.
  ramp = jnp.broadcast_to(jnp.linspace(0.0, 255.0, 64)[None, :, None], (32, 64, 3))
  out = augment.augment_batch(jax.random.key(0), jnp.stack([ramp] * 64), out_size=(16, 32),
                              scale=(0.5, 0.5), ratio=(1.0, 1.0), flip=False, jitter=0.0)
  assert out.shape == (64, 16, 32, 3)
  # Half the area at the canvas's 2:1 aspect: every box is ~45×23 of 64×32, so each view spans
  # ~70 % of the ramp's range (a square box of the same area would span ~56 %).
  spans = np.asarray(out[..., 0].max(axis=(1, 2)) - out[..., 0].min(axis=(1, 2)))
  assert np.all(np.abs(spans / 255.0 - np.sqrt(0.5)) < 0.05), spans / 255.0


def _constant_batch(batch=6, height=12, width=20):
  """Image i is filled with the value i, so every pixel tells which image it came from."""
  return jnp.broadcast_to(jnp.arange(batch, dtype=jnp.float32)[:, None, None, None],
                          (batch, height, width, 3))


def test_cutmix_pastes_one_box_from_a_partner_and_weighs_labels_by_its_area():
  images = _constant_batch()
  for seed in range(8):
    mixed, partner, kept = augment.cutmix(jax.random.key(seed), images, alpha=1.0, prob=1.0)
    mixed, partner, kept = np.asarray(mixed), np.asarray(partner), np.asarray(kept)
    assert sorted(partner.tolist()) == list(range(6))  # A permutation of the batch.
    for i in range(6):
      own = mixed[i, ..., 0] == i
      pasted = mixed[i, ..., 0] == partner[i]
      assert np.all(own | pasted)  # Every pixel is the image's own or its partner's.
      if partner[i] != i:
        # `kept` is exactly the share of own pixels; the pasted ones form one rectangle.
        assert kept[i] == pytest.approx(own.mean())
        rows, cols = np.nonzero(pasted)
        if rows.size:
          assert rows.size == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
    # The same box for the whole batch: one kept fraction.
    assert np.all(kept == kept[0])


def test_cutmix_keeps_about_half_of_each_image_on_average_and_nothing_when_off():
  images = _constant_batch()
  kept = [float(augment.cutmix(jax.random.key(s), images, alpha=1.0, prob=1.0)[2][0])
          for s in range(200)]
  # λ ~ Beta(1, 1) has mean 1/2; clipping at the borders only raises the kept share.
  assert 0.45 < np.mean(kept) < 0.7 and min(kept) < 0.2 and max(kept) > 0.9
  mixed, _, kept_off = augment.cutmix(jax.random.key(0), images, alpha=1.0, prob=0.0)
  np.testing.assert_array_equal(np.asarray(mixed), np.asarray(images))
  np.testing.assert_array_equal(np.asarray(kept_off), np.ones(6, np.float32))


def test_mixup_blends_every_image_with_its_partner_by_one_lambda():
  images = _constant_batch()
  for seed in range(8):
    mixed, partner, kept = augment.mixup(jax.random.key(seed), images, alpha=0.4, prob=1.0)
    mixed, partner, kept = np.asarray(mixed), np.asarray(partner), np.asarray(kept)
    assert sorted(partner.tolist()) == list(range(6))
    assert np.all(kept == kept[0]) and 0.0 < kept[0] < 1.0
    # Image i is the constant i, so every pixel of the blend is λ i + (1 − λ) partner(i).
    expected = kept[0] * np.arange(6) + (1 - kept[0]) * partner
    np.testing.assert_allclose(mixed[..., 0], np.broadcast_to(expected[:, None, None],
                                                             mixed.shape[:3]), rtol=1e-6)


def test_mixup_lambda_follows_its_beta_and_nothing_mixes_when_off():
  images = _constant_batch()
  lams = np.array([float(augment.mixup(jax.random.key(s), images, alpha=0.2, prob=1.0)[2][0])
                   for s in range(300)])
  # Beta(0.2, 0.2): mean 1/2, U-shaped, so most draws lie near 0 or 1.
  assert 0.4 < lams.mean() < 0.6
  assert np.mean((lams < 0.1) | (lams > 0.9)) > 0.5
  mixed, _, kept_off = augment.mixup(jax.random.key(0), images, alpha=0.2, prob=0.0)
  np.testing.assert_array_equal(np.asarray(mixed), np.asarray(images))
  np.testing.assert_array_equal(np.asarray(kept_off), np.ones(6, np.float32))
  half = [float(augment.mixup(jax.random.key(s), images, alpha=0.2, prob=0.5)[2][0]) == 1.0
          for s in range(200)]
  assert 0.35 < np.mean(half) < 0.65  # Applied to about half of the batches.

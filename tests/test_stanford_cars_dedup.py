"""Tests for carjax.data.stanford_cars.dedup: near-duplicate photos."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from carjax.data.stanford_cars import dedup
from tests import fake_stanford_cars as fakes


def test_difference_hash_tolerates_resizing_not_other_photos():
  photo = np.asarray(Image.open(io.BytesIO(fakes.noise_jpeg(1, size=(96, 64)))))
  smaller = np.asarray(Image.fromarray(photo).resize((72, 48)))
  other = np.asarray(Image.open(io.BytesIO(fakes.noise_jpeg(2, size=(96, 64)))))
  hashes = np.stack([dedup.difference_hash(a)
                     for a in (photo, smaller, other)])
  groups = dedup.group_near_duplicates(hashes,
                                       dedup.NEAR_DUPLICATE_MAX_BITS)
  assert groups == [0, 0, 2]

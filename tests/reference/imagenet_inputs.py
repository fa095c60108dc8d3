"""The inputs of the EfficientNet-Lite parity tests, rebuilt identically by the test and by
the script that made the reference logits (numpy and Pillow only, no PyTorch).

The photos are ../shared/data/imagenet_photos (never committed); the committed reference
files hold only logits and the SHA-256 of the inputs they were computed from, so a test can
tell "the inputs changed" (e.g. another Pillow resampler) apart from "the conversion is
wrong".

The recipe is the one of ../shared/data/imagenet_photos/lite0_reference_logits.npz (this
module reproduces its 224 px inputs bit for bit): bicubic resize of the short side to
crop + 32 (the EfficientNet release's CROP_PADDING), centre crop, ``(x - 127) / 128``.
"""

from __future__ import annotations

import hashlib
import pathlib

import numpy as np
from PIL import Image

PHOTOS = ("fish.jpg", "panda.jpg", "bird.png", "cat.png")
RANDOM_SEED = 0
RANDOM_COUNT = 2
CROP_PADDING = 32  # short side before the centre crop: crop + 32 (256 for 224)


def photo_inputs(folder: pathlib.Path, resolution: int) -> np.ndarray:
  """(len(PHOTOS), resolution, resolution, 3) float32, normalised as the Lite weights expect."""
  crops = []
  for name in PHOTOS:
    with Image.open(folder / name) as image:
      image = image.convert("RGB")
      scale = (resolution + CROP_PADDING) / min(image.size)
      width, height = (round(side * scale) for side in image.size)
      image = image.resize((width, height), Image.BICUBIC)
      left, top = (width - resolution) // 2, (height - resolution) // 2
      crops.append(np.asarray(image.crop((left, top, left + resolution, top + resolution)),
                              np.float32))
  return (np.stack(crops) - 127.0) / 128.0


def random_inputs(resolution: int) -> np.ndarray:
  """Standard normal inputs (float64 draws cast to float32, as for Lite0's reference)."""
  rng = np.random.default_rng(RANDOM_SEED)
  return rng.standard_normal((RANDOM_COUNT, resolution, resolution, 3)).astype(np.float32)


def sha256_of(array: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(array, np.float32).tobytes()).hexdigest()

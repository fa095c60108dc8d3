"""Duplicate photos in a download: byte-identical files and near duplicates.

Near duplicates (the same photo at another size, re-encoded or with other labels) are found
by difference hashes; `recipe` keeps each group of them inside one split.
"""

from __future__ import annotations

import concurrent.futures
import hashlib

from absl import logging
import numpy as np
from PIL import Image
import tqdm

from carjax.data.stanford_cars.layouts import SourceImage

# Near-duplicate test: 16x16 difference hashes (256 bits) of the whole
# downloaded photos that differ in at most this many bits. Re-encoding or
# resizing the same photo flips a few bits; different car photos, even of the
# same model, differ in far more (cars20's closest unrelated crops: 42+).
NEAR_DUPLICATE_MAX_BITS = 10
_DHASH_SIDE = 16


def remove_exact_duplicates(images: list[SourceImage], workers: int
                            ) -> tuple[list[SourceImage], int]:
  """Keeps the first (by name) of byte-identical files; counts the others."""
  def digest(image: SourceImage) -> str | None:
    try:
      return hashlib.sha256(image.read()).hexdigest()
    except OSError as e:
      logging.warning("Cannot read %s: %s", image.name, e)
      return None
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    digests = list(tqdm.tqdm(pool.map(digest, images), total=len(images),
                             desc="hash", unit="img", leave=False))
  kept, seen, removed = [], {}, 0
  for image, sha in sorted(zip(images, digests, strict=True), key=lambda p: p[0].name):
    if sha is None:
      continue
    if sha in seen:
      removed += 1
      first = seen[sha]
      if first.model != image.model:
        logging.warning("Identical files with different labels: %s (%s) and "
                        "%s (%s); keeping the first.", first.name, first.model,
                        image.name, image.model)
      continue
    seen[sha] = image
    kept.append(image)
  return kept, removed



def difference_hash(image: np.ndarray, side: int = _DHASH_SIDE) -> np.ndarray:
  """A side*side-bit perceptual hash (packed into uint64 words).

  Each bit says whether a pixel of a small greyscale thumbnail is brighter
  than its right neighbour: stable under resizing and re-encoding.
  """
  thumbnail = Image.fromarray(image).convert("L").resize(
      (side + 1, side), Image.Resampling.BILINEAR)
  pixels = np.asarray(thumbnail, np.int16)
  bits = (pixels[:, 1:] > pixels[:, :-1]).ravel()
  return np.packbits(bits).view(np.uint64)


def group_near_duplicates(hashes: np.ndarray, max_bits: int) -> list[int]:
  """Union-find of images whose hashes differ in at most `max_bits` bits.

  Args:
    hashes: [N, words] uint64.
    max_bits: the largest Hamming distance still called a near duplicate.

  Returns:
    For each image, the index of its group's first (lowest-index) member.
  """
  n = len(hashes)
  parent = list(range(n))

  def find(i: int) -> int:
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  block = 256  # Rows per step: bounds the [block, N, words] temporary.
  for start in range(0, n, block):
    distances = np.bitwise_count(
        hashes[start:start + block, None, :] ^ hashes[None, :, :]).sum(-1)
    rows, cols = np.nonzero(distances <= max_bits)
    for i, j in zip(rows + start, cols, strict=True):
      if i < j:
        root_i, root_j = find(i), find(j)
        if root_i != root_j:
          parent[max(root_i, root_j)] = min(root_i, root_j)
  return [find(i) for i in range(n)]

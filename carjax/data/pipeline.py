"""Batches from a decoded, cached split, placed on the device mesh.

Training order is a pure function of (seed, step): epoch `e` uses the permutation drawn from
`np.random.default_rng([seed, e])`, so a run resumed at any step sees exactly the batches an
uninterrupted run would. Evaluation visits every image exactly once: the last batch is padded
with copies of image 0 and carries a `mask` that is 0 on the padding.

In a multi-process run every process computes the same global batch indices and reads only
`rows` of them (the positions its devices hold), so the data a run sees depends on
(seed, step) alone, never on the number of processes; images are read from the (memory-
mapped) cache only for those rows.
"""

from __future__ import annotations

from typing import Iterator

import jax
import numpy as np

from carjax.errors import DataError


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full training batches per epoch (the remainder is dropped; it differs every epoch)."""
  if num_examples < batch_size:
    raise DataError(
        f"the training split has {num_examples} images, fewer than config.train.batch_size="
        f"{batch_size}; lower the batch size or add images")
  return num_examples // batch_size


def train_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Indices of the examples in training batch `step` (global, counted from 0)."""
  per_epoch = steps_per_epoch(num_examples, batch_size)
  epoch, within = divmod(step, per_epoch)
  order = np.random.default_rng([seed, epoch]).permutation(num_examples)
  return order[within * batch_size:(within + 1) * batch_size]


def train_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int,
                  start_step: int = 0, rows: np.ndarray | None = None,
                  extra_targets: dict[str, np.ndarray] | None = None
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Endless training batches {'image': uint8 NHWC, 'label': int32 N} from `start_step`
  (plus each array of `extra_targets` under its name, e.g. 'aux_label' or 'teacher_logits',
  aligned with `labels`); with `rows`, only those positions of each global batch."""
  step = start_step
  while True:
    idx = np.sort(train_indices(len(labels), batch_size, seed, step))
    if rows is not None:
      idx = idx[rows]
    batch = {"image": images[idx], "label": labels[idx]}
    for name, values in (extra_targets or {}).items():
      batch[name] = values[idx]
    yield batch
    step += 1


def eval_batches(images: np.ndarray, labels: np.ndarray, batch_size: int,
                 rows: np.ndarray | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Batches covering every example once; the last is padded and masked. With `rows`,
  only those positions of each (global) batch."""
  n = len(labels)
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    pad = batch_size - len(idx)
    mask = np.concatenate([np.ones(len(idx), np.float32), np.zeros(pad, np.float32)])
    idx = np.concatenate([idx, np.zeros(pad, idx.dtype)])
    if rows is not None:
      idx, mask = idx[rows], mask[rows]
    yield {"image": images[idx], "label": labels[idx], "mask": mask}


def shard_batch(batch: dict[str, np.ndarray], sharding: jax.sharding.Sharding):
  """Places a host batch on the devices, split along the batch axis."""
  return jax.device_put(batch, sharding)

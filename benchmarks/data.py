"""The input pipeline alone: decode + cache (cold and warm), host batching, augmentation.

Runs in its own worker process. Every figure is images/s, so it divides directly into the
training throughput: a pipeline that is N× faster than training can never be its bottleneck.
"""

from __future__ import annotations

import os
import shutil
import time

import numpy as np

from benchmarks import model_configs as configs
from benchmarks.timing import sample, timed_repeats


class LimitedSource:
  """The first `limit` records of each split of a source, sampled evenly (smoke runs)."""

  def __init__(self, source, limit: int):
    self._source, self._limit = source, limit
    self.class_names = source.class_names

  @property
  def identity(self) -> str:
    return f"{self._source.identity}:benchmark_limit={self._limit}"

  def records(self, split: str):
    records = self._source.records(split)
    if self._limit and len(records) > self._limit:
      keep = np.linspace(0, len(records) - 1, self._limit).round().astype(int)
      records = [records[i] for i in keep]
    return records


def open_limited(data_spec: dict):
  from carjax.data import sources  # pylint: disable=g-import-not-at-top
  source = sources.open_source(data_spec["source"])
  return LimitedSource(source, data_spec.get("limit") or 0)


def load_cached_train_split(data_spec: dict, image_size: int):
  """The train split from the benchmark's cache (decoded there first if it is not)."""
  from carjax.data import cache  # pylint: disable=g-import-not-at-top
  split = cache.load_split(open_limited(data_spec), data_spec.get("split", "train"),
                           image_size=image_size, cache_dir=data_spec["cache_dir"],
                           progress=False)
  return split, {"images": len(split.labels), "from_cache": split.from_cache,
                 "load_s": split.seconds}


def measure(task: dict) -> dict:
  """Decode (cold cache) → load (warm cache) → host batches → on-device augmentation."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from carjax.data import augment, cache, pipeline  # pylint: disable=g-import-not-at-top

  data_spec = task["data"]
  size, batch_size = task["image_size"], task["train_batch"]
  split_name = data_spec.get("split", "train")
  source = open_limited(data_spec)
  result = {"source": data_spec["source"], "split": split_name,
            "decode_threads": os.cpu_count()}

  # Cold: an empty cache folder, so every image is decoded, resized and the cache written.
  cache_dir = data_spec["cache_dir"]
  shutil.rmtree(cache_dir, ignore_errors=True)
  os.makedirs(cache_dir)
  start = time.perf_counter()
  cold = cache.load_split(source, split_name, image_size=size, cache_dir=cache_dir,
                          progress=False)
  cold_s = time.perf_counter() - start
  if cold.from_cache:
    raise RuntimeError("the cold-cache load found a cache; the benchmark's cache folder was "
                       "not empty")
  images = len(cold.labels) + len(cold.failures)
  result["decode_cold"] = sample([cold_s], images, 1)
  result["unreadable"] = len(cold.failures)
  # Warm: the .npy cache is read back (repeated; the page cache makes later reads hot).
  warm_seconds = []
  for _ in range(task["repeats"]):
    start = time.perf_counter()
    warm = cache.load_split(source, split_name, image_size=size, cache_dir=cache_dir,
                            progress=False)
    warm_seconds.append(time.perf_counter() - start)
    if not warm.from_cache:
      raise RuntimeError("the warm-cache load decoded again instead of reading the cache")
  result["cache_warm"] = sample(warm_seconds, images, 1)

  if len(warm.labels) < batch_size:
    result["batches_skipped"] = (f"{len(warm.labels)} images, fewer than one batch of "
                                 f"{batch_size}")
    return result
  # Host side of the training loop: gather a shuffled batch and put it on the device.
  mesh = jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  sharding = NamedSharding(mesh, P("data"))
  batches = pipeline.train_batches(warm.images, warm.labels, batch_size, seed=0)
  steps = max(task["steps"], 5)
  feed = lambda: pipeline.shard_batch(next(batches), sharding)
  result["host_feed"] = sample(
      timed_repeats(feed, jax.block_until_ready, warmup=1, repeats=task["repeats"],
                    steps=steps), batch_size, steps)

  # On-device augmentation of the train step alone (crop + resize, flip, jitter), per model
  # config (they differ in crop scale and jitter only).
  aug = configs.bench_config(task["model"], image_size=size, batch_size=batch_size,
                             infer_batch=batch_size).data.augment
  augment_fn = jax.jit(lambda rng, im: augment.augment_batch(
      rng, im, out_size=size, scale=tuple(aug.crop_scale), ratio=tuple(aug.crop_ratio),
      flip=aug.flip, jitter=aug.color_jitter))
  device_batch = feed()["image"]
  rng = jax.random.key(0)
  start = time.perf_counter()
  jax.block_until_ready(augment_fn(rng, device_batch))
  result["augment_first_call_s"] = time.perf_counter() - start
  result["augment"] = sample(
      timed_repeats(lambda: augment_fn(rng, device_batch), jax.block_until_ready,
                    warmup=task["warmup"], repeats=task["repeats"], steps=steps),
      batch_size, steps)
  return result

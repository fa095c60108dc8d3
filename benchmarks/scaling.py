"""Training throughput of the real train step over N devices of the run's global mesh.

`measure(config)` times the step `carjax.train.setup.build` makes for the loop (mesh, state
shardings, augmentation, gradient accumulation and the model's dtype) on a synthetic uint8
batch fed through `global_batch`, so the figure is the loop's step without
disk I/O. `launch/scaling_benchmark.py` runs it in one fresh process per device count (fake
CPU devices need `--xla_force_host_platform_device_count` before JAX starts).
"""

from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np

from carjax.data import decode
from carjax.train import setup as setup_lib
from carjax.train import sharding as sharding_lib


def measure(config: ml_collections.ConfigDict, num_classes: int = 20, steps: int = 5,
            repeats: int = 5, warmup: int = 2) -> dict:
  """Compile seconds and images/s (median and best of `repeats` windows of `steps` steps)."""
  setup = setup_lib.build(config, num_classes, steps_per_epoch=100)
  rng = setup.rngs["train"]
  state = setup.init_state(setup.rngs["init"])
  data_sharding, step = setup.data_sharding, setup.train_step
  batch_size, size = config.train.batch_size, decode.image_hw(config.data.image_size)
  pixels = np.random.default_rng(0).integers(0, 256, (batch_size,) + size + (3,), np.uint8)
  labels = np.arange(batch_size, dtype=np.int32) % num_classes
  rows = sharding_lib.process_rows(data_sharding, batch_size)
  feed = lambda: sharding_lib.global_batch({"image": pixels[rows], "label": labels[rows]},
                                           data_sharding, batch_size)
  start = time.perf_counter()
  state, metrics = step(state, feed(), rng)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  for _ in range(warmup):
    state, metrics = step(state, feed(), rng)
  jax.block_until_ready(metrics)
  windows = []  # Seconds per step of each timed window; a shared machine makes them vary.
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = step(state, feed(), rng)
    jax.block_until_ready((state, metrics))
    windows.append((time.perf_counter() - start) / steps)
  median, best = float(np.median(windows)), min(windows)
  return {"devices": jax.device_count(), "processes": jax.process_count(),
          "batch_size": batch_size, "image_size": list(size), "steps": steps, "repeats": repeats,
          "compile_s": round(compile_s, 2), "step_s_median": round(median, 4),
          "images_per_s_median": round(batch_size / median, 1),
          "images_per_s_best": round(batch_size / best, 1)}

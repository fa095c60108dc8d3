"""carjax's own models, timed through the project's real jitted steps (benchmark worker side).

Training is the jitted step of `carjax.train.setup.build`, the one the loop trains with
(donated state, the loop's mesh and shardings), so the timed work includes
the on-device augmentation (random resized crop, flip, colour jitter) and normalisation of
the uint8 batch, the forward and backward pass, and the optimizer update of
`carjax.train.optim.make_optimizer`. Inference is the project's jitted `eval_step`.
The first call is split with jax's ahead-of-time API into trace, lower, compile and the
first execution; the compiled executable is then the one that is timed.
"""

from __future__ import annotations

import os
import resource
import time

import numpy as np

from benchmarks import data as bench_data
from benchmarks import model_configs as configs
from benchmarks.timing import sample, timed_repeats


def _first_call(jitted, args):
  """(compiled, outputs, {'trace_s', 'lower_s', 'compile_s', 'first_run_s', 'total_s'})."""
  import jax  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  traced = jitted.trace(*args)
  t1 = time.perf_counter()
  lowered = traced.lower()
  t2 = time.perf_counter()
  compiled = lowered.compile()
  t3 = time.perf_counter()
  out = compiled(*args)
  jax.block_until_ready(out)
  t4 = time.perf_counter()
  return compiled, out, {"trace_s": t1 - t0, "lower_s": t2 - t1, "compile_s": t3 - t2,
                         "first_run_s": t4 - t3, "total_s": t4 - t0}


def _minor_faults() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(task: dict) -> dict:
  from carjax import host_runtime  # pylint: disable=g-import-not-at-top
  if task.get("compilation_cache"):
    host_runtime.enable_compilation_cache(task["compilation_cache"])
  import jax  # pylint: disable=g-import-not-at-top
  from carjax import models  # pylint: disable=g-import-not-at-top
  from carjax.train import setup as setup_lib  # pylint: disable=g-import-not-at-top

  config = configs.bench_config(task["model"], image_size=task["image_size"],
                                batch_size=task["train_batch"],
                                infer_batch=task["infer_batch"], optimizer=task["optimizer"])
  result = {"implementation": f"carjax.models ({config.model.name}"
                              + (f", {config.model.variant}" if configs.efficientnet_variant(config)
                                 else "") + ")",
            "jax_devices": [str(d) for d in jax.devices()],
            "malloc_tuning": host_runtime.malloc_tuning_in_effect()}

  start = time.perf_counter()
  # The loop's own set-up: mesh, shardings, optimiser and jitted steps. per_epoch only shapes
  # the learning-rate schedule; no effect on speed.
  setup = setup_lib.build(config, task["num_classes"], steps_per_epoch=100)
  result["xla_compiler_options"] = (
      models.compiler_options(config.model, jax.default_backend()) or {})
  state = setup.init_state(setup.rngs["init"])
  jax.block_until_ready(state)
  result["init_s"] = time.perf_counter() - start
  result["parameters"] = int(sum(np.size(p) for p in jax.tree.leaves(state.params)))

  measured = task.get("measure", ("train", "infer"))
  if "train" in measured:
    result.update(_measure_train(task, setup, state))
  if "infer" in measured:
    result.update(_measure_infer(task, setup))
  return result


def _host_batch(task: dict, setup, batch_size: int, rng, with_mask: bool = False):
  """A batch of random uint8 images and labels, placed as the loop places its batches."""
  from carjax.data import pipeline  # pylint: disable=g-import-not-at-top
  size = task["image_size"]
  batch = {"image": rng.integers(0, 256, (batch_size, size, size, 3), np.uint8),
           "label": rng.integers(0, task["num_classes"], (batch_size,), np.int32)}
  if with_mask:
    batch["mask"] = np.ones((batch_size,), np.float32)
  return pipeline.shard_batch(batch, setup.data_sharding)


def _measure_train(task: dict, setup, state) -> dict:
  """The train step's first call, its rate on a synthetic batch (with page faults per step),
  an optional profile, and its rate end to end on real cached photos when `task` has data."""
  import jax  # pylint: disable=g-import-not-at-top
  rngs, train_batch = setup.rngs, task["train_batch"]
  warmup, repeats, steps = task["warmup"], task["repeats"], task["steps"]
  batch = _host_batch(task, setup, train_batch, np.random.default_rng(0))
  compiled, (state, _), first = _first_call(setup.train_step, (state, batch, rngs["train"]))
  result = {"train_first_call": first}
  holder = {"state": state}

  def train_once():
    holder["state"], metrics = compiled(holder["state"], batch, rngs["train"])
    return metrics

  sync = lambda metrics: jax.block_until_ready((holder["state"], metrics))
  faults = _minor_faults()
  result["train"] = sample(timed_repeats(train_once, sync, warmup=warmup, repeats=repeats,
                                         steps=steps), train_batch, steps)
  result["train_page_faults_per_step"] = (
      (_minor_faults() - faults) / (warmup + repeats * steps))

  if task.get("profile_dir"):
    profile_dir = os.path.join(task["profile_dir"], task["model"])
    with jax.profiler.trace(profile_dir):
      for _ in range(max(steps, 3)):
        metrics = train_once()
      sync(metrics)
    result["profile_dir"] = profile_dir
  if task.get("data"):
    result.update(_measure_end_to_end(task, setup, compiled, holder, sync))
  return result


def _measure_end_to_end(task: dict, setup, compiled, holder: dict, sync) -> dict:
  """The compiled train step fed by the real input pipeline from the decoded-image cache."""
  from carjax.data import pipeline  # pylint: disable=g-import-not-at-top
  train_batch, rngs = task["train_batch"], setup.rngs
  split, info = bench_data.load_cached_train_split(task["data"], task["image_size"])
  result = {"e2e_data": info}
  if len(split.labels) < train_batch:
    result["e2e_skipped"] = (f"the train split has {len(split.labels)} images, fewer than "
                             f"one batch of {train_batch}")
    return result
  batches = pipeline.train_batches(split.images, split.labels, train_batch, seed=0)

  def e2e_once():
    real = pipeline.shard_batch(next(batches), setup.data_sharding)
    holder["state"], metrics = compiled(holder["state"], real, rngs["train"])
    return metrics

  result["e2e_train"] = sample(timed_repeats(e2e_once, sync, warmup=1, repeats=task["repeats"],
                                             steps=task["steps"]), train_batch, task["steps"])
  return result


def _measure_infer(task: dict, setup) -> dict:
  """The eval step's first call and its rate, on a fresh (not donated) state."""
  import jax  # pylint: disable=g-import-not-at-top
  infer_batch, steps = task["infer_batch"], task["steps"]
  batch = _host_batch(task, setup, infer_batch, np.random.default_rng(1), with_mask=True)
  # A state whose buffers were not donated (the training one was).
  state = setup.init_state(setup.rngs["init"])
  compiled_eval, _, first = _first_call(setup.eval_step, (state, batch))
  return {"infer_first_call": first,
          "infer": sample(timed_repeats(lambda: compiled_eval(state, batch),
                                        jax.block_until_ready, warmup=task["warmup"],
                                        repeats=task["repeats"], steps=steps),
                          infer_batch, steps)}

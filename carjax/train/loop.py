"""`train_and_evaluate(config, workdir)`: the whole training run, resumable at any step.

Start-up order for the weights: the newest checkpoint in `workdir` (a stopped run resumes
where it was), else `config.init.resume_from` (another run's checkpoint), else pretrained
weights named by `config.model.pretrained` (the head re-initialised for our classes), else
random initialisation. Data order and augmentation are pure functions of (seed, step), so a
resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from carjax import distributed
from carjax import models
from carjax.data import pipeline
from carjax.evaluation import metrics as metrics_lib
from carjax.train import checkpoint as ckpt
from carjax.train import optim
from carjax.train import sharding as sharding_lib
from carjax.train import steps as steps_lib
from carjax.train.run_io import MetricWriter, ProgressBar, load_data, write_run_files
from carjax.train.state import TrainState


def rngs_from_seed(seed: int) -> dict[str, jax.Array]:
  """Independent keys by purpose, all derived from the one `config.seed`."""
  root = jax.random.key(seed)
  init, train = jax.random.split(root)
  return {"init": init, "train": train}


def class_weights_for(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Inverse-frequency weights with mean 1 over examples (a class absent from train gets 0)."""
  counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
  weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
  return weights.astype(np.float32)


def init_variables(model, config: ml_collections.ConfigDict, rng):
  size = config.data.image_size
  return model.init(rng, jnp.zeros((1, size, size, 3), jnp.float32), train=False)


def create_train_state(model, config: ml_collections.ConfigDict, rng, tx) -> TrainState:
  """A freshly initialised state (pure: use under `jax.jit` or `jax.eval_shape`).

  `tx` is built once per run and shared, so every state of the run has the same static
  (non-array) fields, which jit's output shardings and checkpoint restores compare.
  """
  variables = init_variables(model, config, rng)
  params = variables["params"]
  return TrainState.create(
      apply_fn=model.apply, params=params, tx=tx,
      batch_stats=variables.get("batch_stats", {}),
      ema_params=params if config.train.ema_decay else {})


def _initial_state(model, config, workdir, rngs, tx, state_sharding, abstract):
  """Applies the resume order; returns (state, meta of the restored checkpoint or {})."""
  restored = ckpt.restore(ckpt.manager(workdir, ckpt.LAST), abstract)
  if restored is not None:
    state, meta = restored
    logging.info("Resuming from %s at step %d.", ckpt.checkpoint_dir(workdir, ckpt.LAST),
                 int(state.step))
    return state, meta
  if config.init.resume_from:
    source_dir = config.init.resume_from
    restored = ckpt.restore(ckpt.manager(source_dir, ckpt.LAST), abstract)
    if restored is None:
      raise FileNotFoundError(
          f"config.init.resume_from={source_dir!r} holds no checkpoint under "
          f"{ckpt.checkpoint_dir(source_dir, ckpt.LAST)}")
    logging.info("Starting from the checkpoint of %s.", source_dir)
    return restored
  init = jax.jit(lambda r: create_train_state(model, config, r, tx),
                 out_shardings=state_sharding)
  state = init(rngs["init"])
  if config.model.pretrained:
    state = state_from_pretrained(state, model, config)
  return state, {}


def state_from_pretrained(state: TrainState, model, config: ml_collections.ConfigDict) -> TrainState:
  """`state` with every parameter and BatchNorm statistic from `config.model.pretrained`
  except the classifier head (re-initialised for our classes; zero with
  `config.init.zero_head`). Fails, naming them, on weights made for another model."""
  from carjax.models import pretrained  # pylint: disable=g-import-not-at-top
  weights_dir = pretrained_weights_dir(config)
  variables, conventions = pretrained.load_pretrained(weights_dir)
  _check_conventions(conventions, config.model, model)
  merged = pretrained.merge_pretrained(
      {"params": state.params, "batch_stats": state.batch_stats}, variables,
      reinit=("head",))
  if config.init.zero_head:
    # Random logits of a fresh head over 1280 pretrained features are large (loss ~4 for
    # 20 classes instead of ln 20 = 3); starting at zero keeps early gradients from
    # scrambling the pretrained backbone (measured: 0.41 val accuracy after one epoch on
    # cars20 against 0.29 with the random head).
    merged["params"]["head"] = jax.tree.map(jnp.zeros_like, merged["params"]["head"])
  # Each new leaf goes where its initialised counterpart lives (replicated over the mesh).
  placed = {k: jax.tree.map(lambda new, old: jax.device_put(new, old.sharding), merged[k], v)
            for k, v in (("params", state.params), ("batch_stats", state.batch_stats))}
  state = state.replace(**placed)
  merged = placed
  if config.train.ema_decay:
    state = state.replace(ema_params=merged["params"])
  logging.info("Initialised from pretrained weights %s (head re-initialised%s).",
               weights_dir, " at zero" if config.init.zero_head else "")
  return state


def pretrained_weights_dir(config: ml_collections.ConfigDict) -> str:
  """The absolute directory `config.model.pretrained` names ('' for none), converting known
  ImageNet weights into the cache on first use (`carjax.convert.weights_cache`). The config
  keeps the name as given, so a run's config.json stays the same on every machine."""
  if not config.model.get("pretrained"):
    return ""
  from carjax.convert import weights_cache  # pylint: disable=g-import-not-at-top
  return weights_cache.resolve(config.model.pretrained)


def _check_conventions(conventions: dict, model_config, model) -> None:
  """Fails when converted weights were made for another architecture or normalisation."""
  problems = []
  if conventions.get("variant") != model_config.get("variant"):
    problems.append(f"variant: weights {conventions.get('variant')!r}, "
                    f"config.model.variant {model_config.get('variant')!r}")
  for key in ("padding", "bn_epsilon", "activation", "se"):
    if key in conventions and getattr(model, key, conventions[key]) != conventions[key]:
      problems.append(f"{key}: weights {conventions[key]!r}, model {getattr(model, key)!r}")
  for key in ("input_mean", "input_std"):
    if key in conventions and not np.allclose(conventions[key], model_config[key]):
      problems.append(f"{key}: weights expect {conventions[key]}, "
                      f"config.model.{key} is {tuple(model_config[key])}")
  if problems:
    raise ValueError(f"config.model.pretrained={model_config.pretrained!r} does not match the "
                     "model config:\n  " + "\n  ".join(problems))


def _mesh_of(sharding_tree):
  return jax.tree.leaves(sharding_tree)[0].mesh


def evaluate_state(eval_step, state, images, labels, batch_size, data_sharding):
  """Runs `eval_step` over a whole split; returns (summary dict, logits [N, K]).

  Each process reads only its rows of every global batch; the outputs are replicated, so
  every process gets the whole split's sums and logits, each image counted once.
  """
  sums: dict[str, float] = {}
  logits = []
  rows = sharding_lib.process_rows(data_sharding, batch_size)
  for start, batch in zip(range(0, len(labels), batch_size),
                          pipeline.eval_batches(images, labels, batch_size, rows=rows)):
    out = jax.device_get(eval_step(
        state, sharding_lib.global_batch(batch, data_sharding, batch_size)))
    logits.append(out.pop("logits")[:min(batch_size, len(labels) - start)])
    for k, v in out.items():
      sums[k] = sums.get(k, 0.0) + float(v)
  count = max(sums["count"], 1.0)
  summary = {"loss": sums["loss_sum"] / count, "accuracy": sums["correct"] / count,
             "top3_accuracy": sums["top3_correct"] / count, "count": int(sums["count"])}
  return summary, np.concatenate(logits) if logits else np.zeros((0, 0), np.float32)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config` in `workdir`, evaluating each epoch; returns the final eval metrics."""
  pretrained_weights_dir(config)  # Converts or fails before touching the workdir or data.
  os.makedirs(workdir, exist_ok=True)
  rngs = rngs_from_seed(config.seed)
  # --- scale-out (issue 14): one mesh over every process's devices; decoded once per disk.
  mesh = sharding_lib.make_mesh(config)
  sharding_lib.check_batch_sizes(config, mesh)
  data_sharding = sharding_lib.batch_sharding(mesh)
  replicated = sharding_lib.replicated(mesh)
  data = distributed.primary_first("carjax:load_data", lambda: load_data(config))
  class_names = data.class_names
  num_classes = len(class_names)
  if distributed.is_primary():
    write_run_files(config, workdir, class_names, data)
  # --- end scale-out

  model = models.build_model(config.model, num_classes)
  mean, std = models.input_normalization(config.model)
  per_epoch = pipeline.steps_per_epoch(len(data.train.labels), config.train.batch_size)
  total_steps = per_epoch * config.train.num_epochs

  abstract_params = jax.eval_shape(
      lambda r: init_variables(model, config, r), rngs["init"])["params"]
  tx, schedules = optim.make_optimizer(config.train, per_epoch, abstract_params)
  abstract = jax.eval_shape(lambda r: create_train_state(model, config, r, tx), rngs["init"])
  state_sharding = sharding_lib.state_sharding(abstract, mesh, config)
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sharding)
  state, meta = _initial_state(model, config, workdir, rngs, tx, state_sharding, abstract)

  weights = (class_weights_for(data.train.labels, num_classes)
             if config.train.class_weights else None)
  xla_options = models.compiler_options(config.model, jax.default_backend())
  train_step = jax.jit(
      steps_lib.make_train_step(model, config, num_classes, mean, std, weights,
                                sharding_lib.micro_batch_sharding(mesh)),
      donate_argnums=(0,), out_shardings=(state_sharding, replicated),
      compiler_options=xla_options)
  eval_step = jax.jit(steps_lib.make_eval_step(model, config, num_classes, mean, std),
                      out_shardings=replicated, compiler_options=xla_options)

  last_mngr = ckpt.manager(workdir, ckpt.LAST)
  best_mngr = ckpt.manager(workdir, ckpt.BEST)
  best_metric = config.eval.best_metric
  best_value = meta.get("best_value", -np.inf)
  train_seconds = meta.get("train_seconds", 0.0)
  writer = MetricWriter(workdir) if distributed.is_primary() else _NoMetricWriter()
  start_step = int(state.step)
  if start_step >= total_steps:
    logging.info("Training already finished (%d/%d steps).", start_step, total_steps)

  def make_meta(step, epoch, eval_summary=None):
    return {"step": step, "epoch": epoch, "class_names": list(class_names),
            "best_metric": best_metric, "best_value": best_value,
            "train_seconds": train_seconds, "eval": eval_summary or {}}

  batches = pipeline.train_batches(data.train.images, data.train.labels,
                                   config.train.batch_size, config.seed, start_step,
                                   rows=sharding_lib.process_rows(data_sharding,
                                                                  config.train.batch_size))
  step = start_step
  try:
    while step < total_steps:
      epoch = step // per_epoch + 1
      epoch_end = epoch * per_epoch
      bar = ProgressBar(epoch, config.train.num_epochs, start=step - (epoch - 1) * per_epoch,
                        total=per_epoch)
      sums = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
      window_start, window_images = time.perf_counter(), 0
      pending = []
      while step < epoch_end:
        batch = sharding_lib.global_batch(next(batches), data_sharding,
                                          config.train.batch_size)
        state, step_metrics = train_step(state, batch, rngs["train"])
        pending.append(step_metrics)
        step += 1
        window_images += config.train.batch_size
        if step % config.train.log_every_steps == 0 or step == epoch_end:
          # Fetching metrics syncs host and device; do it once per window, not per step.
          for m in jax.device_get(pending):
            for k in sums:
              sums[k] += float(m[k])
          pending = []
          elapsed = time.perf_counter() - window_start
          train_seconds += elapsed
          images_per_s = window_images / max(elapsed, 1e-9)
          bar.update(step - (epoch - 1) * per_epoch,
                     loss=sums["loss_sum"] / sums["count"],
                     accuracy=sums["correct"] / sums["count"], images_per_s=images_per_s)
          writer.write(step, "train", {
              "loss": sums["loss_sum"] / sums["count"],
              "accuracy": sums["correct"] / sums["count"], "images_per_s": images_per_s,
              "lr_backbone": float(schedules["backbone"](step)),
              "lr_head": float(schedules["head"](step)), "epoch": epoch})
          window_start, window_images = time.perf_counter(), 0
      bar.close()

      eval_summary = None
      if epoch % config.eval.every_epochs == 0 or step == total_steps:
        t0 = time.perf_counter()
        eval_summary, logits = evaluate_state(eval_step, state, data.eval.images,
                                              data.eval.labels, config.eval.batch_size,
                                              data_sharding)
        eval_summary.update(metrics_lib.headline_metrics(
            data.eval.labels, logits, num_classes))
        eval_summary["seconds"] = time.perf_counter() - t0
        eval_summary["epoch"] = epoch
        writer.write(step, config.data.eval_split, eval_summary)
        logging.info("epoch %d/%d  %s: %s", epoch, config.train.num_epochs,
                     config.data.eval_split, metrics_lib.format_summary(eval_summary))
        if eval_summary[best_metric] > best_value:
          best_value = eval_summary[best_metric]
          ckpt.save(best_mngr, step, state, make_meta(step, epoch, eval_summary))
      ckpt.save(last_mngr, step, state, make_meta(step, epoch, eval_summary))
  except KeyboardInterrupt:
    logging.warning("Interrupted at step %d: saving a checkpoint so the same command resumes.",
                    step)
    try:
      ckpt.save(last_mngr, step, state, make_meta(step, step // per_epoch + 1))
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("Could not save at the interruption (%s); the run resumes from the "
                      "last epoch's checkpoint instead.", e)
    writer.close()
    raise
  writer.close()

  # The run's result: the best checkpoint, evaluated and reported in full.
  from carjax.evaluation import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    return _evaluate_best_across_processes(workdir, config, data, eval_step, abstract,
                                           data_sharding)
  return evaluate_lib.evaluate_workdir(workdir, which=ckpt.BEST, split=config.data.eval_split,
                                       preloaded=data)


# --- scale-out (issue 14) ---------------------------------------------------------------------


class _NoMetricWriter:
  """What the non-primary processes of a multi-process run write metrics to: nothing (the
  primary writes the run's metrics once)."""

  def write(self, step, split, values) -> None:
    del step, split, values

  def close(self) -> None:
    pass


def _evaluate_best_across_processes(workdir, config, data, eval_step, abstract,
                                    data_sharding) -> dict[str, Any]:
  """The best checkpoint's evaluation, as `evaluate_workdir` writes it, computed by every
  process together (each evaluates its rows) and written by the primary."""
  from carjax.evaluation import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
  state, meta = ckpt.restore(ckpt.manager(workdir, ckpt.BEST), abstract)
  _, logits = evaluate_state(eval_step, state, data.eval.images, data.eval.labels,
                             config.eval.batch_size, data_sharding)
  split = config.data.eval_split
  extra = {"checkpoint": ckpt.BEST, "step": meta.get("step"), "epoch": meta.get("epoch"),
           "evaluated_on": split, "unreadable_files": len(data.eval.failures),
           "train_seconds": meta.get("train_seconds")}
  labels = np.asarray(data.eval.labels)
  if distributed.is_primary():
    return evaluate_lib.write_evaluation(
        os.path.join(workdir, f"eval_{ckpt.BEST}_{split}"), labels, logits, data.eval.names,
        data.class_names, extra=extra)
  # The same summary as the primary's metrics.json: every process holds all the logits.
  return {**metrics_lib.headline_metrics(labels, logits, len(data.class_names)),
          "count": int(len(labels)), **extra}

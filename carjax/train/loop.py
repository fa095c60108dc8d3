"""`train(config, workdir)`: the epochs of one training run, resumable at any step.

The set-up (model, optimiser, mesh, shardings, jitted steps) and the resume order are
`carjax.train.setup`'s; this module only loops: training windows, the per-epoch evaluation,
`last` and `best` checkpoints and the NaN guard. Data order and augmentation are pure
functions of (seed, step), so a resumed run reproduces an uninterrupted one. The final
evaluation of the best checkpoint is the caller's (`carjax.evaluation.evaluate_trained`,
which `launch/train.py` runs after training).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from carjax import checkpoint as ckpt
from carjax import distributed
from carjax import faults
from carjax import interrupts
from carjax import metrics as metrics_lib
from carjax.data import aux_labels
from carjax.data import loading
from carjax.data import pipeline
from carjax.data.loading import RunData, load_data, open_configured_source
from carjax.errors import NonFiniteError
from carjax.train import recovery
from carjax.train import rerun
from carjax.train import setup as setup_lib
from carjax.train import sharding as sharding_lib
from carjax.train import steps as steps_lib
from carjax.train import teacher as teacher_lib
from carjax.train import validate
from carjax.train.progress import ProgressBar
from carjax.workdir import MetricWriter, write_run_files


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
    with interrupts.deferred("the evaluation batch"):
      out = jax.device_get(eval_step(
          state, sharding_lib.global_batch(batch, data_sharding, batch_size)))
    faults.point("eval")
    logits.append(out.pop("logits")[:min(batch_size, len(labels) - start)])
    for k, v in out.items():
      sums[k] = sums.get(k, 0.0) + float(v)
  count = max(sums["count"], 1.0)
  summary = {"loss": sums["loss_sum"] / count, "accuracy": sums["correct"] / count,
             "top3_accuracy": sums["top3_correct"] / count, "count": int(sums["count"])}
  return summary, np.concatenate(logits) if logits else np.zeros((0, 0), np.float32)


@dataclasses.dataclass
class TrainedRun:
  """What a finished `train` hands on: the run's config, workdir, decoded data and set-up."""

  config: ml_collections.ConfigDict
  workdir: str
  data: RunData
  setup: setup_lib.TrainSetup


def train(config: ml_collections.ConfigDict, workdir: str) -> TrainedRun:
  """Trains `config` in `workdir`, evaluating each epoch and keeping `last` and `best`.

  Every config value is checked first and pretrained weights are converted (or the run stops)
  before the workdir or the data is touched; the workdir is then locked for the whole run,
  and a rerun on a workdir holding another run's checkpoints is refused before anything is
  written.
  """
  validate.validate_config(config)
  setup_lib.pretrained_weights_dir(config)
  faults.reset()
  # One lock per run: in a multi-process run, process 0 holds it for all of them.
  with rerun.WorkdirLock(workdir, enabled=jax.process_index() == 0), \
       interrupts.terminate_as_interrupt():
    return _train_locked(config, workdir)


def _train_locked(config: ml_collections.ConfigDict, workdir: str) -> TrainedRun:
  # One mesh over every process's devices, checked before any data is read.
  mesh = sharding_lib.make_mesh(config)
  sharding_lib.check_batch_sizes(config, mesh)
  source = open_configured_source(config.data)
  validate.check_data_source(source, config)
  class_names = tuple(source.class_names)
  num_classes = len(class_names)
  # The auxiliary labels are read and checked before any image is decoded.
  aux = aux_labels.for_train_split(config.data, source)
  aux_names = aux.class_names if aux else ()
  if config.train.get("teacher_workdir"):
    teacher_lib.check_teacher(config, class_names)
  rerun.check_rerun(workdir, config, class_names,
                    setup_lib.abstract_variables(config, num_classes, len(aux_names)),
                    aux_class_names=aux_names)
  # Decoded once per disk: the primary fills the cache, the others read it.
  data = distributed.primary_first("carjax:load_data", lambda: load_data(config, source, aux))
  validate.check_decoded(data.train.labels, data.eval.labels, config)
  if config.train.get("teacher_workdir"):
    data = dataclasses.replace(data, train_teacher_logits=distributed.primary_first(
        "carjax:teacher_logits",
        lambda: teacher_lib.training_logits(config, workdir, source, data.train.names)))
  if distributed.is_primary():
    write_run_files(config, workdir, class_names, data.unreadable_files(), aux_names)

  per_epoch = pipeline.steps_per_epoch(len(data.train.labels), config.train.batch_size)
  weights = (steps_lib.class_weights_for(data.train.labels, num_classes)
             if config.train.class_weights else None)
  setup = setup_lib.build(config, num_classes, per_epoch, class_weights=weights, mesh=mesh,
                          aux_classes=len(aux_names))
  state, meta = setup_lib.initial_state(setup, config, workdir)
  run = _EpochLoop(config, workdir, data, class_names, per_epoch, setup.schedules,
                   setup.train_step, setup.eval_step, setup.data_sharding, setup.rngs["train"])
  run.resume(state, meta, setup.abstract)
  run.train()
  return TrainedRun(config, workdir, data, setup)


class _NoMetricWriter:
  """What the non-primary processes of a multi-process run write metrics to: nothing (the
  primary writes the run's metrics once)."""

  def write(self, step, split, values) -> None:
    del step, split, values

  def close(self) -> None:
    pass


class _EpochLoop:
  """The epochs of one run: training windows, evaluation, `best` and `last` checkpoints.

  Checkpoint protocol (what makes any interruption resumable to the same result):
  `last` is the commit record. At an epoch's end it is saved after the evaluation with
  `epoch_finished=True` and the best decision (`best_step`, `best_value`) in its record; only
  then is `best` saved, from the same state. A run stopped before that `last` save resumes
  from the previous one and redoes the epoch and its evaluation; a run stopped after it finds
  `best_step` equal to its step and redoes only the `best` save. A `last` saved by an
  interruption exactly at an epoch's end carries `epoch_finished=False`, and the resumed run
  evaluates that epoch first. Between epochs `last` is also saved every
  `config.checkpoint.every_steps` steps and every `every_minutes` minutes.
  """

  def __init__(self, config, workdir, data, class_names, per_epoch, schedules, train_step,
               eval_step, data_sharding, train_rng):
    self.config, self.workdir, self.data = config, workdir, data
    self.class_names, self.per_epoch, self.schedules = class_names, per_epoch, schedules
    self.train_step, self.eval_step = train_step, eval_step
    self.data_sharding, self.train_rng = data_sharding, train_rng
    self.total_steps = per_epoch * config.train.num_epochs
    self.best_metric = config.eval.best_metric
    self.best_value, self.best_step = None, None
    self.train_seconds = 0.0
    self.saved_step = -1  # The step of the newest `last` checkpoint.
    self.last_save_time = time.monotonic()
    every = config.get("checkpoint", {})
    self.every_steps = int(every.get("every_steps", 0) or 0)
    self.every_seconds = 60.0 * float(every.get("every_minutes", 0) or 0)
    self.last_mngr = ckpt.manager(workdir, ckpt.LAST)
    self.best_mngr = ckpt.manager(workdir, ckpt.BEST)
    self.writer = MetricWriter(workdir) if distributed.is_primary() else _NoMetricWriter()
    self.state = None

  def resume(self, state, meta, abstract) -> None:
    self.state = state
    self.train_seconds = meta.get("train_seconds", 0.0) or 0.0
    if meta and meta.get("class_names") is not None and "step" in meta:
      self.saved_step = int(state.step)
      self.best_value, self.best_step = recovery.reconcile_best(self.workdir, state, meta,
                                                                abstract)
    self.resumed_meta = meta

  def make_meta(self, step, epoch_finished=True, eval_summary=None) -> dict[str, Any]:
    return {"step": step, "epoch": (step - 1) // self.per_epoch + 1 if step else 0,
            "class_names": list(self.class_names), "best_metric": self.best_metric,
            "best_value": self.best_value, "best_step": self.best_step,
            "train_seconds": self.train_seconds, "eval": eval_summary or {},
            "epoch_finished": epoch_finished}

  def save_last(self, epoch_finished=True, eval_summary=None) -> None:
    step = int(self.state.step)
    with interrupts.deferred("the 'last' checkpoint save"):
      ckpt.save(self.last_mngr, step, self.state, self.make_meta(step, epoch_finished,
                                                                 eval_summary))
      self.saved_step, self.last_save_time = step, time.monotonic()

  def train(self) -> None:
    step = int(self.state.step)
    if step >= self.total_steps and self.resumed_meta.get("epoch_finished", True):
      logging.info("Training already finished (%d/%d steps).", step, self.total_steps)
    try:
      if step and step % self.per_epoch == 0 and not self.resumed_meta.get("epoch_finished",
                                                                            True):
        logging.info("Evaluating epoch %d, whose end an interruption cut short.",
                     step // self.per_epoch)
        self.finish_epoch()
      batch_size = self.config.train.batch_size
      batches = pipeline.train_batches(
          self.data.train.images, self.data.train.labels, batch_size, self.config.seed, step,
          rows=sharding_lib.process_rows(self.data_sharding, batch_size),
          extra_targets=self.data.train_targets())
      while int(self.state.step) < self.total_steps:
        self.train_epoch(batches)
        self.finish_epoch()
    except KeyboardInterrupt:
      self.save_at_interruption()
      raise
    finally:
      self.writer.close()

  def train_epoch(self, batches) -> None:
    """Trains up to the end of the current epoch, checking every logging window."""
    config, per_epoch = self.config, self.per_epoch
    step = int(self.state.step)
    epoch = step // per_epoch + 1
    epoch_end = epoch * per_epoch
    bar = ProgressBar(epoch, config.train.num_epochs, start=step - (epoch - 1) * per_epoch,
                      total=per_epoch)
    self.window = _Window(self.workdir)
    self.epoch_sums = {k: 0.0 for k in _SUMMED}
    while step < epoch_end:
      faults.point(f"step_{step}")
      batch = sharding_lib.global_batch(next(batches), self.data_sharding,
                                        config.train.batch_size)
      # A signal inside a jitted call (the first one compiles for seconds) can crash XLA
      # (SIGSEGV seen at exit) or be swallowed; between steps the state is also never torn.
      with interrupts.deferred("the training step"):
        self.state, step_metrics = self.train_step(self.state, batch, self.train_rng)
        self.window.add(step, step_metrics)
        step += 1
      if step % config.train.log_every_steps == 0 or step == epoch_end:
        self.log_window(step, epoch, bar)
      if step != epoch_end and self.periodic_save_due(step):
        self.log_window(step, epoch, bar)
        self.save_last()
    bar.close()

  def log_window(self, step: int, epoch: int, bar) -> None:
    """Fetches the window's metrics (one host sync), stops on NaN/Inf, logs them."""
    sums = self.window.flush(self.saved_step)
    if sums is None:
      return
    self.train_seconds += sums["seconds"]
    images_per_s = sums["count"] / max(sums["seconds"], 1e-9)
    for k in self.epoch_sums:  # Running means over the epoch so far, as Keras shows them.
      self.epoch_sums[k] += sums[k]
    totals = self.epoch_sums
    loss, accuracy = totals["loss_sum"] / totals["count"], totals["correct"] / totals["count"]
    bar.update(step - (epoch - 1) * self.per_epoch, loss=loss, accuracy=accuracy,
               images_per_s=images_per_s)
    logged = {
        "loss": loss, "cross_entropy": totals["ce_sum"] / totals["count"],
        "accuracy": accuracy, "images_per_s": images_per_s,
        "grad_norm": sums["grad_norm"],
        "lr_backbone": float(self.schedules["backbone"](step)),
        "lr_head": float(self.schedules["head"](step)), "epoch": epoch}
    if self.data.train_aux_labels is not None:
      logged["aux_accuracy"] = totals["aux_correct"] / totals["count"]
    self.writer.write(step, "train", logged)

  def periodic_save_due(self, step: int) -> bool:
    if self.every_steps and step % self.every_steps == 0:
      return True
    return bool(self.every_seconds) and (time.monotonic() - self.last_save_time
                                         >= self.every_seconds)

  def finish_epoch(self) -> None:
    """Evaluates (when due), saves `last` with the best decision, then `best` if it improved."""
    step = int(self.state.step)
    epoch = step // self.per_epoch
    eval_summary = None
    if epoch % self.config.eval.every_epochs == 0 or step == self.total_steps:
      eval_summary = self.evaluate(step, epoch)
      if validate.metric_improves(self.best_metric, eval_summary[self.best_metric],
                                  self.best_value):
        self.best_value, self.best_step = eval_summary[self.best_metric], step
    # Ctrl-C or SIGTERM between the two saves waits: `best` is then never behind `last`.
    with interrupts.deferred("the end-of-epoch checkpoint saves"):
      self.save_last(True, eval_summary)
      if self.best_step == step:
        ckpt.save(self.best_mngr, step, self.state, self.make_meta(step, True, eval_summary))

  def evaluate(self, step: int, epoch: int) -> dict[str, Any]:
    config = self.config
    t0 = time.perf_counter()
    summary, logits = evaluate_state(self.eval_step, self.state, self.data.eval.images,
                                     self.data.eval.labels, config.eval.batch_size,
                                     self.data_sharding)
    if not (np.isfinite(summary["loss"]) and np.all(np.isfinite(logits))):
      raise NonFiniteError(f"evaluation after step {step} (epoch {epoch}) gave non-finite "
                           f"logits; {_nan_advice(self.workdir, self.saved_step)}")
    summary.update(metrics_lib.headline_metrics(self.data.eval.labels, logits,
                                                len(self.class_names)))
    summary["seconds"] = time.perf_counter() - t0
    summary["epoch"] = epoch
    split = loading.selection_split(config.data)
    self.writer.write(step, split, summary)
    logging.info("epoch %d/%d  %s: %s", epoch, config.train.num_epochs, split,
                 metrics_lib.format_summary(summary))
    return summary

  def save_at_interruption(self) -> None:
    """Saves `last` at the interrupted step unless it holds unchecked or torn state."""
    try:
      step = int(self.state.step)
      if step == self.saved_step:
        return
      if getattr(self, "window", None) is not None:
        self.window.flush(self.saved_step)  # Raises on NaN: never save a diverged state.
      logging.warning("Interrupted at step %d: saving a checkpoint so the same command "
                      "resumes.", step)
      self.save_last(epoch_finished=step % self.per_epoch != 0)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("Could not save at the interruption (%s); the same command resumes "
                      "from the checkpoint at step %d instead.", e, self.saved_step)


def _nan_advice(workdir: str, saved_step: int) -> str:
  kept = (f"the checkpoint at step {saved_step} is intact" if saved_step >= 0 else
          "no checkpoint was saved")
  return (f"training stopped ({kept}). Lower config.train.learning_rate or set "
          "config.train.grad_clip_norm, in a new --workdir (--config.init.resume_from="
          f"{workdir} starts it from the intact checkpoint)")


# The train metrics summed over a logging window and an epoch ('aux_correct': 0 without an
# auxiliary head).
_SUMMED = ("loss_sum", "ce_sum", "correct", "count", "aux_correct")


class _Window:
  """Train metrics of the steps since the last host sync."""

  def __init__(self, workdir: str):
    self.steps, self.metrics = [], []
    self.start_time = time.perf_counter()
    self.workdir = workdir

  def add(self, step: int, metrics) -> None:
    self.steps.append(step)
    self.metrics.append(metrics)

  def flush(self, saved_step: int) -> dict[str, float] | None:
    """Sums of the pending steps' metrics; raises NonFiniteError naming the first bad step."""
    if not self.steps:
      return None
    fetched = jax.device_get(self.metrics)
    steps = self.steps
    self.steps, self.metrics = [], []
    for step, m in zip(steps, fetched):
      bad = [k for k in ("loss_sum", "grad_norm") if k in m and not np.isfinite(m[k])]
      if bad:
        what = " and ".join("loss" if k == "loss_sum" else "gradient" for k in bad)
        # Checkpoints count completed steps: the update that failed completes step + 1.
        raise NonFiniteError(f"non-finite {what} at training step {step + 1}: "
                             + _nan_advice(self.workdir, saved_step))
    now = time.perf_counter()
    sums = {k: float(sum(float(m.get(k, 0.0)) for m in fetched)) for k in _SUMMED}
    sums["grad_norm"] = float(max(float(m.get("grad_norm", 0.0)) for m in fetched))
    sums["seconds"] = now - self.start_time
    self.start_time = now
    return sums

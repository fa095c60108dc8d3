"""The runs a study reports on: one per model and seed, each reused, trained or found missing.

`model_configs(study_config)` gives each model named in `config.models` the study's shared
`data` section (one run per seed); `prepare_run` then decides, per run in `workdir/<name>/`:

  * a finished run (last checkpoint at its final epoch, evaluated) is reused as it is: only
    its evaluation on the study's held-out split is (re)computed if missing or stale;
  * otherwise, with `config.train_missing`, `carjax.train.loop.train` trains or resumes it;
  * otherwise an unfinished run is reported with its best checkpoint so far, and a model
    without any checkpoint is listed as missing. Nothing missing stops the report.

The runs' checkpoints and evaluations are only read, except for the evaluation it (re)computes.

`config.extra_models` are run and reported the same way, after `config.models`, as extra rows
that never enter the headline comparison (e.g. a CNN distilled from the fine-tuned model:
not from scratch). A model's `train.teacher_workdir` may name another model of the study as
'@<model>': `resolve_teachers` turns it into that model's run of the same seed.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any, Callable, Sequence

from absl import logging
import ml_collections

from carjax import evaluation
from carjax import checkpoint as ckpt
from carjax import workdir as workdir_lib
from carjax.data import loading
from carjax.data import sources
from carjax.errors import ConfigError
from carjax.train import rerun
from carjax.train import loop

TRAINED, REUSED, UNFINISHED, MISSING, FAILED = (
    "trained", "reused", "unfinished", "missing", "failed")
# Config fields that do not change what a run learns, ignored when comparing configs.
_IRRELEVANT_FIELDS = ("data.cache_dir", "data.num_workers", "train.log_every_steps",
                      "eval.batch_size", "init.resume_from", "model.pretrained")


@dataclasses.dataclass
class ModelRun:
  """One model of the study: where its run is, what happened to it, its evaluation."""

  name: str
  workdir: str
  status: str  # TRAINED, REUSED, UNFINISHED, MISSING or FAILED.
  detail: str = ""
  eval_dir: str | None = None
  metrics: dict[str, Any] | None = None  # eval_best_<split>/metrics.json

  @property
  def evaluated(self) -> bool:
    return self.metrics is not None


def model_configs(study_config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """{run name: its config with the study's `data` fields copied over the model's own}.

  Each model runs once per seed of `study_config.seeds`: the first seed's run is named after
  the model, the others `<model>_seed<k>` (only `config.seed` differs: initialisation,
  batch order, augmentation and dropout; the data split stays the study's)."""
  seeds = tuple(study_config.get("seeds", ())) or (None,)
  configs = {}
  for name, model_config in all_models(study_config).items():
    config = copy.deepcopy(model_config)
    for key, value in study_config.data.items():
      if key not in config.data:
        raise KeyError(f"config.data.{key} of the study is not a field of model {name!r}'s "
                       f"data section")
      config.data[key] = value
    for i, seed in enumerate(seeds):
      run_config = copy.deepcopy(config)
      if seed is not None:
        run_config.seed = int(seed)
      configs[name if i == 0 else f"{name}_seed{seed}"] = run_config
  return configs


def all_models(study_config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """The headline models, then the extra ones (`config.extra_models`), by name."""
  extra = study_config.get("extra_models") or {}
  clash = sorted(set(study_config.models) & set(extra))
  if clash:
    raise ConfigError(f"config.extra_models repeats the model name {clash[0]!r} of "
                      "config.models")
  return {**study_config.models, **extra}


def is_extra(model_name: str, study_config: ml_collections.ConfigDict) -> bool:
  return model_name in (study_config.get("extra_models") or {})


def resolve_teachers(configs: dict[str, ml_collections.ConfigDict], workdir: str,
                     study_config: ml_collections.ConfigDict) -> None:
  """Replaces each run's `train.teacher_workdir='@<model>'` by the workdir of that model's run
  of the same seed (`<workdir>/<model>` or `<workdir>/<model>_seed<k>`), which comes first in
  `configs`; an unknown model, or one that is not a headline model, is a ConfigError."""
  names = list(all_models(study_config))
  for run_name, config in configs.items():
    teacher = config.train.get("teacher_workdir") or ""
    if not teacher.startswith("@"):
      continue
    teacher_model = teacher[1:]
    if teacher_model not in study_config.models:
      raise ConfigError(f"run {run_name!r}: config.train.teacher_workdir={teacher!r} names no "
                        f"headline model of the study ({', '.join(study_config.models)})")
    seed_suffix = run_name[len(model_of_run(run_name, names)):]
    config.train.teacher_workdir = os.path.join(workdir, teacher_model + seed_suffix)


def model_of_run(run_name: str, model_names) -> str:
  """The model a run belongs to ('custom_cnn_seed1' → 'custom_cnn')."""
  for name in sorted(model_names, key=len, reverse=True):
    if run_name == name or run_name.startswith(f"{name}_seed"):
      return name
  return run_name


def config_differences(wanted: ml_collections.ConfigDict,
                       actual: ml_collections.ConfigDict) -> list[str]:
  """Fields (other than bookkeeping ones) where a run's config differs from the study's; a
  field added to carjax after the run was made counts at the value it trained with, and a
  data folder named another way (relative or absolute) is the same folder."""
  a = rerun.flat_config(wanted)
  b = rerun.recorded_config(rerun.flat_config(actual), a)
  differ = [k for k in rerun.changed_fields(a, b) if k not in _IRRELEVANT_FIELDS]
  if "data.source" in differ and sources.same_source(a["data.source"], b["data.source"]):
    differ.remove("data.source")
  return differ


def _evaluation_is_current(eval_dir: str, best_step: int) -> bool:
  if not all(os.path.exists(os.path.join(eval_dir, f)) for f in workdir_lib.EVAL_FILES):
    return False
  return workdir_lib.read_eval_metrics(eval_dir).get("step") == best_step


def ensure_evaluation(workdir: str, split: str,
                      study_run_config: ml_collections.ConfigDict | None = None
                      ) -> tuple[str, dict[str, Any]]:
  """(eval folder, metrics) of the best checkpoint on `split`, evaluating only if the folder
  is missing or belongs to an older best checkpoint. With `study_run_config`, the run is
  scored with the study's evaluation settings where its own differ (`eval.flip_tta`, and
  `eval.image_size` when the study sets one), into the folder `launch.evaluate` would use
  for them (`eval_best_<split>_<variant>`)."""
  meta = ckpt.read_meta(workdir, ckpt.BEST)
  if meta is None:
    raise FileNotFoundError(f"no best checkpoint in {workdir}")
  settings, variant = {}, ""
  if study_run_config is not None:
    own = workdir_lib.load_run_config(workdir)
    settings = {"flip_tta": bool(study_run_config.eval.get("flip_tta", False)),
                "image_size": (loading.eval_image_hw(study_run_config)
                               if study_run_config.eval.get("image_size")
                               else loading.eval_image_hw(own))}
    variant = evaluation.variant_name(own, uses_ema=bool(own.train.ema_decay), **settings)
  eval_dir = workdir_lib.eval_dir(workdir, ckpt.BEST, split, variant)
  if not _evaluation_is_current(eval_dir, meta.get("step")):
    logging.info("Evaluating the best checkpoint of %s on %s.", workdir, split)
    evaluation.evaluate_workdir(workdir, ckpt.BEST, split=split, **settings)
  return eval_dir, workdir_lib.read_eval_metrics(eval_dir)


def ensure_ensemble_evaluation(workdirs: Sequence[str], split: str,
                               output_dir: str) -> dict[str, Any]:
  """The metrics of the ensemble of the runs' best checkpoints on `split` (the mean of their
  probabilities), evaluated into `output_dir` unless it already holds the evaluation of
  these same checkpoints."""
  wanted = [(w, (ckpt.read_meta(w, ckpt.BEST) or {}).get("step")) for w in workdirs]
  if os.path.exists(os.path.join(output_dir, workdir_lib.EVAL_METRICS)):
    metrics = workdir_lib.read_eval_metrics(output_dir)
    found = [(m.get("workdir"), m.get("step")) for m in metrics.get("ensemble", [])]
    if found == wanted and metrics.get("evaluated_on") == split:
      return metrics
  logging.info("Evaluating the ensemble of %s on %s.", ", ".join(workdirs), split)
  return evaluation.evaluate_ensemble(list(workdirs), output_dir, ckpt.BEST, split=split)


def prepare_run(name: str, config: ml_collections.ConfigDict, workdir: str,
                train_missing: bool,
                train_fn: Callable[[ml_collections.ConfigDict, str], Any] | None = None
                ) -> ModelRun:
  """Reuses, trains/resumes or reports as missing one model's run (see the module doc)."""
  train_fn = train_fn or loop.train
  split = config.data.eval_split
  progress = workdir_lib.run_progress(workdir)
  notes = []
  if progress is not None:
    differences = config_differences(config, progress["config"])
    if differences:
      notes.append("its config differs from the study's in " + ", ".join(differences[:8]) +
                   (" …" if len(differences) > 8 else ""))
  try:
    if progress is not None and progress["finished"]:
      status = REUSED
      epochs = progress["num_epochs"]
      notes.insert(0, f"finished run reused ({epochs} epoch{'s' if epochs != 1 else ''})")
    elif train_missing:
      logging.info("Study: training %s in %s.", name, workdir)
      train_fn(config, workdir)
      status = TRAINED
      notes = ["resumed and finished by this study" if progress else "trained by this study"]
    elif progress is not None and os.path.isdir(ckpt.checkpoint_dir(workdir, ckpt.BEST)):
      status = UNFINISHED
      notes.insert(0, f"training unfinished (epoch {progress['epoch']} of "
                      f"{progress['num_epochs']}): its best checkpoint so far is reported")
    else:
      reason = ("no checkpoint yet" if os.path.isdir(workdir) else "no run in the workdir")
      return ModelRun(name, workdir, MISSING,
                      f"{reason}, and config.train_missing is False")
    eval_dir, metrics = ensure_evaluation(workdir, split, config)
    if os.path.basename(eval_dir) != f"eval_{ckpt.BEST}_{split}":
      notes.append(f"scored with the study's evaluation settings ({os.path.basename(eval_dir)}"
                   "); its checkpoint was chosen with its own")
  except KeyboardInterrupt:
    raise
  except Exception as e:  # pylint: disable=broad-except
    logging.exception("Study: model %s failed.", name)
    return ModelRun(name, workdir, FAILED, short_error(e))
  return ModelRun(name, workdir, status, "; ".join(notes), eval_dir, metrics)

def train_seconds_of(workdir: str, metrics: dict[str, Any] | None = None) -> float | None:
  """The run's training time from its last checkpoint, else from an evaluation's metrics."""
  seconds = (workdir_lib.run_progress(workdir) or {}).get("train_seconds")
  if seconds is None and metrics is not None:
    seconds = metrics.get("train_seconds")
  return seconds


def headline_model(run_name: str, study_config) -> str:
  """The model (headline or extra) a run belongs to."""
  return model_of_run(run_name, list(all_models(study_config)))


def short_error(error: Exception, limit: int = 300) -> str:
  """'Type: message' cut to `limit` characters (orbax's messages list every array)."""
  text = f"{type(error).__name__}: {error}"
  return text if len(text) <= limit else text[:limit] + " … (the log has it all)"

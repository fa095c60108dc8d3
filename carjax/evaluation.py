"""Evaluate a workdir's checkpoint on a split of its data or on any folder of the same makes.

Writes into the output folder: `metrics.json` (headline figures), `per_class.csv`
(precision/recall/F1/support), `confusion_matrix.csv` and `.png`, and `predictions.csv`
(every image with its true and predicted make and the confidence).
"""

from __future__ import annotations

import csv
import os
from typing import Any, Sequence

from absl import logging
import jax
import numpy as np

from carjax import distributed
from carjax import jsonio
from carjax import workdir as workdir_lib
from carjax.data import cache as cache_lib
from carjax.data import loading
from carjax.data import sources
from carjax.data import splits
from carjax.errors import ConfigError, DataError
from carjax import metrics as metrics_lib
from carjax.inference import Predictor
from carjax.train import loop
from carjax import checkpoint as ckpt


def _check_not_training_data(folder: str, source, predictor: Predictor) -> None:
  """Refuses a folder that holds a train split or any of the run's training images: its
  figures would mix seen images into a held-out evaluation."""
  train_splits = [s for s in source.splits if source.has_split_folders and
                  splits.canonical_split(s) == splits.TRAIN]
  if train_splits:
    raise DataError(
        f"--folder={folder!r} holds a training split ({os.path.join(source.root, train_splits[0])})"
        f": evaluating it would mix training images in. Point --folder at one split folder "
        f"(e.g. {os.path.join(source.root, 'val')}), or use --split")
  config = predictor.config
  try:
    run_source = loading.open_configured_source(config.data)
  except Exception:  # pylint: disable=broad-except
    return  # The run's data is gone or elsewhere: nothing to compare with.
  # With a dev split, the whole train folder (train and dev) counts as the run's own data.
  run_source = getattr(run_source, "base", run_source)
  if not isinstance(run_source, sources.ImageFolderSource):
    return
  seen = {os.path.realpath(r.path) for r in run_source.records(config.data.train_split)}
  overlap = [r.path for s in source.splits for r in source.records(s)
             if os.path.realpath(r.path) in seen]
  if overlap:
    raise DataError(f"--folder={folder!r} holds {len(overlap)} images of the run's training "
                    f"split, e.g. {overlap[0]}; evaluate on images the model has not seen")


def _folder_split(folder: str, predictor: Predictor):
  """Every image of an image folder (all its splits), labelled by the run's class order."""
  source = sources.ImageFolderSource(folder)
  _check_not_training_data(folder, source, predictor)
  unknown = sorted(set(source.class_names) - set(predictor.class_names))
  if unknown:
    raise DataError(f"--folder={folder!r} has classes the model never learned: {unknown}; "
                     f"it knows {list(predictor.class_names)}")
  remap = np.array([predictor.class_names.index(c) for c in source.class_names], np.int32)
  images, labels, names, failures = [], [], [], []
  for split in source.splits:
    part = cache_lib.load_split(source, split, image_size=predictor.image_size,
                                resize_mode=predictor.resize_mode, cache_dir=None,
                                num_workers=None, progress=True)
    images.append(part.images)
    labels.append(remap[part.labels])
    names.extend(part.names)
    failures.extend(part.failures)
  return np.concatenate(images), np.concatenate(labels), names, failures


def write_evaluation(output_dir: str, labels: np.ndarray, logits: np.ndarray, names,
                     class_names, extra: dict[str, Any] | None = None) -> dict[str, Any]:
  """Computes every metric and writes the evaluation files; returns metrics.json's content."""
  os.makedirs(output_dir, exist_ok=True)
  num_classes = len(class_names)
  predictions = np.argmax(logits, axis=1)
  summary = metrics_lib.headline_metrics(labels, logits, num_classes)
  summary = metrics_lib.with_intervals(summary, labels, logits, num_classes)
  summary.update({"count": int(len(labels)), **(extra or {})})
  with open(os.path.join(output_dir, workdir_lib.EVAL_METRICS), "w") as f:
    jsonio.dump(summary, f, indent=2)

  confusion = metrics_lib.confusion_matrix(labels, predictions, num_classes)
  scores = metrics_lib.per_class_scores(confusion)
  with open(os.path.join(output_dir, workdir_lib.EVAL_PER_CLASS), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["class", "precision", "recall", "f1", "support"])
    for i, name in enumerate(class_names):
      w.writerow([name, f"{scores['precision'][i]:.4f}", f"{scores['recall'][i]:.4f}",
                  f"{scores['f1'][i]:.4f}", int(scores["support"][i])])
  with open(os.path.join(output_dir, workdir_lib.EVAL_CONFUSION), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["true \\ predicted"] + list(class_names))
    for i, name in enumerate(class_names):
      w.writerow([name] + [int(c) for c in confusion[i]])
  probs = np.exp(logits - logits.max(axis=1, keepdims=True))
  probs /= probs.sum(axis=1, keepdims=True)
  with open(os.path.join(output_dir, workdir_lib.EVAL_PREDICTIONS), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["file", "true", "predicted", "confidence", "correct"])
    for name, t, p, pr in zip(names, labels, predictions, probs):
      w.writerow([name, class_names[t], class_names[p], f"{pr[p]:.4f}", int(t == p)])
  from carjax import plotting  # pylint: disable=g-import-not-at-top
  plotting.plot_confusion_matrix(confusion, class_names,
                                os.path.join(output_dir, workdir_lib.EVAL_CONFUSION_FIGURE),
                                title=f"Confusion matrix (accuracy {summary['accuracy']:.3f})")
  return summary


def _load_target(predictor: Predictor, split: str | None, folder: str | None, preloaded=None):
  """(images, labels, names, failures, target name) of `split` of the predictor's run (default:
  its eval split) or of every image of `folder`, decoded at the predictor's input size."""
  config = predictor.config
  if folder:
    images, labels, names, failures = _folder_split(folder, predictor)
    if len(labels) == 0:
      raise DataError(f"nothing to evaluate: no readable image in {folder!r}")
    return images, labels, names, failures, os.path.basename(os.path.normpath(folder))
  split = split or config.data.eval_split
  if (preloaded is not None and split == loading.selection_split(config.data)
      and predictor.image_size == predictor.configured_image_size):
    part = preloaded.eval
  else:
    source = loading.open_configured_source(config.data)
    part = cache_lib.load_split(
        source, split, image_size=predictor.image_size,
        resize_mode=config.data.resize_mode,
        cache_dir=os.path.expanduser(config.data.cache_dir) if config.data.cache_dir else None,
        num_workers=None, progress=True)
  if len(part.labels) == 0:
    raise DataError(f"nothing to evaluate: no readable image in {split!r}")
  return part.images, part.labels, part.names, part.failures, split


def variant_name(run_config, flip_tta: bool, image_size, uses_ema: bool) -> str:
  """How an evaluation with these settings departs from the run's own config ('' when it
  does not): the suffix of its folder, so it never overwrites the run's own evaluation."""
  parts = []
  if bool(flip_tta) != bool(run_config.eval.get("flip_tta", False)):
    parts.append("flip" if flip_tta else "noflip")
  if tuple(image_size) != loading.eval_image_hw(run_config):
    parts.append("{}x{}".format(*image_size))
  if bool(uses_ema) != bool(run_config.train.ema_decay):
    parts.append("raw")
  return "_".join(parts)


def _variant(predictor: Predictor) -> str:
  return variant_name(predictor.config, predictor.flip_tta, predictor.image_size,
                      predictor.uses_ema)


def _settings(predictor: Predictor) -> dict[str, Any]:
  return {"flip_tta": predictor.flip_tta, "image_size": list(predictor.image_size),
          "weights": "ema" if predictor.uses_ema else "raw"}


def evaluate_workdir(workdir: str, which: str = ckpt.BEST, split: str | None = None,
                     folder: str | None = None, output_dir: str | None = None,
                     preloaded=None, flip_tta: bool | None = None,
                     image_size=None, use_ema: bool | None = None) -> dict[str, Any]:
  """Evaluates checkpoint `which` of `workdir` on `split` (default: the run's eval split) or
  on every image of `folder`; returns the metrics and writes the evaluation files.

  `flip_tta`: mirror-averaged predictions (None: as the run's config says); a choice other
  than the run's own goes to its own folder (`..._flip` / `..._noflip`), and so do an
  `image_size` other than the run's (`..._<h>x<w>`) and the raw weights of a run that keeps
  a weight average (`use_ema=False`: `..._raw`)."""
  predictor = Predictor(workdir, which, flip_tta=flip_tta, image_size=image_size,
                        use_ema=use_ema)
  config = predictor.config
  images, labels, names, failures, target = _load_target(predictor, split, folder, preloaded)
  logits = predictor.logits(images, batch_size=config.eval.batch_size)
  output_dir = output_dir or workdir_lib.eval_dir(workdir, which, target, _variant(predictor))
  meta = predictor.checkpoint_meta
  summary = write_evaluation(output_dir, np.asarray(labels), logits, names,
                             predictor.class_names,
                             extra={"checkpoint": which, "step": meta.get("step"),
                                    "epoch": meta.get("epoch"), "evaluated_on": target,
                                    "unreadable_files": len(failures),
                                    "train_seconds": meta.get("train_seconds"),
                                    **_settings(predictor)})
  logging.info("Evaluated %s checkpoint of %s on %s: %s (written to %s)", which, workdir,
               target, metrics_lib.format_summary(summary), output_dir)
  return summary


def evaluate_ensemble(workdirs: Sequence[str], output_dir: str, which: str = ckpt.BEST,
                      split: str | None = None, folder: str | None = None,
                      flip_tta: bool | None = None, image_size=None,
                      use_ema: bool | None = None) -> dict[str, Any]:
  """Evaluates the ensemble of several runs, the mean of their predicted probabilities, on
  `split` (default: the first run's eval split) or `folder`; writes into `output_dir`.

  Each member classifies the photos at its own input size. The members must know the same
  makes in the same order and see the same photos: runs whose dev splits differ (another
  `data.dev_fraction` or `data.split_seed`) are refused, naming the first photo that differs.
  """
  if len(workdirs) < 2:
    raise ConfigError(f"an ensemble needs two workdirs or more, got {list(workdirs)}")
  members, probabilities = [], []
  reference = None
  for workdir in workdirs:
    predictor = Predictor(workdir, which, flip_tta=flip_tta, image_size=image_size,
                          use_ema=use_ema)
    images, labels, names, failures, target = _load_target(predictor, split, folder)
    if reference is None:
      reference = (workdir, predictor.class_names, np.asarray(labels), list(names), target,
                   len(failures))
      split = None if folder else target  # The other members score the same split.
    else:
      _check_same_photos(reference, workdir, predictor.class_names, list(names))
    logits = predictor.logits(images, batch_size=predictor.config.eval.batch_size)
    probabilities.append(np.asarray(jax.nn.softmax(logits, axis=-1), np.float64))
    members.append({"workdir": workdir, "checkpoint": which,
                    "step": predictor.checkpoint_meta.get("step"),
                    "epoch": predictor.checkpoint_meta.get("epoch"), **_settings(predictor)})
  _, class_names, labels, names, target, unreadable = reference
  mean = np.mean(probabilities, axis=0)
  # Log-probabilities: their softmax gives back the mean, and their argmax is its argmax.
  logits = np.log(np.maximum(mean, np.finfo(np.float64).tiny)).astype(np.float32)
  summary = write_evaluation(output_dir, labels, logits, names, class_names,
                             extra={"ensemble": members, "evaluated_on": target,
                                    "unreadable_files": unreadable})
  logging.info("Evaluated the ensemble of %s on %s: %s (written to %s)", ", ".join(workdirs),
               target, metrics_lib.format_summary(summary), output_dir)
  return summary


def _check_same_photos(reference, workdir: str, class_names, names: list[str]) -> None:
  first_workdir, first_classes, _, first_names, _, _ = reference
  if list(class_names) != list(first_classes):
    raise DataError(f"{workdir} knows the makes {list(class_names)}, {first_workdir} knows "
                    f"{list(first_classes)}: an ensemble needs the same makes in the same order")
  # The same photo reached by another spelling of its path (a symlink, ../) is the same photo.
  first, here = ([os.path.realpath(n) for n in ns] for ns in (first_names, names))
  if first != here:
    first_set, here_set = set(first), set(here)
    only_first = [n for n in first if n not in here_set]
    only_here = [n for n in here if n not in first_set]
    example = (f"{only_first[0]!r} only in the first's" if only_first else
               f"{only_here[0]!r} only in {workdir}'s" if only_here else "in another order")
    raise DataError(f"{workdir} and {first_workdir} see different photos ({len(here)} and "
                    f"{len(first)}; {example}): their splits differ, and an ensemble is scored "
                    "on one set of photos")


def evaluate_trained(run: loop.TrainedRun) -> dict[str, Any]:
  """The result of a finished `loop.train`: its best checkpoint evaluated on the eval split
  and written to `eval_best_<split>/`, from the data the run already decoded. With a dev
  split, this is the one time the eval split is scored: the test figure."""
  if jax.process_count() > 1:
    return _evaluate_best_across_processes(run)
  return evaluate_workdir(run.workdir, which=ckpt.BEST, split=run.config.data.eval_split,
                          preloaded=run.data)


def _evaluate_best_across_processes(run: loop.TrainedRun) -> dict[str, Any]:
  """The best checkpoint's evaluation, as `evaluate_workdir` writes it, computed by every
  process together (each evaluates its rows) and written by the primary."""
  config, data, setup = run.config, run.data, run.setup
  state, meta = ckpt.restore(ckpt.manager(run.workdir, ckpt.BEST), setup.abstract)
  split = config.data.eval_split
  part = data.eval
  if split != loading.selection_split(config.data):  # Chosen on dev: now the test split.
    part = distributed.primary_first("carjax:load_eval_split", lambda: loading.load_split(
        config.data, loading.open_configured_source(config.data), split,
        image_size=loading.eval_image_hw(config)))
  _, logits = loop.evaluate_state(setup.eval_step, state, part.images, part.labels,
                                  config.eval.batch_size, setup.data_sharding)
  extra = {"checkpoint": ckpt.BEST, "step": meta.get("step"), "epoch": meta.get("epoch"),
           "evaluated_on": split, "unreadable_files": len(part.failures),
           "train_seconds": meta.get("train_seconds"),
           # As `_settings` records them for a single process.
           "flip_tta": bool(config.eval.get("flip_tta", False)),
           "image_size": list(loading.eval_image_hw(config)),
           "weights": "ema" if config.train.ema_decay else "raw"}
  labels = np.asarray(part.labels)
  if distributed.is_primary():
    return write_evaluation(workdir_lib.eval_dir(run.workdir, ckpt.BEST, split), labels,
                            logits, part.names, data.class_names, extra=extra)
  # The same summary as the primary's metrics.json: every process holds all the logits.
  return {**metrics_lib.headline_metrics(labels, logits, len(data.class_names)),
          "count": int(len(labels)), **extra}

"""The study in one command: train (or reuse) every model, evaluate alike, write one report.

`run_study(config, workdir)` (config: `configs/study.py`) prepares one run per model and seed
in `workdir/<name>/` (`carjax.study.runs`: reused, trained or resumed, or listed as missing),
then writes the report to `workdir/report/`: `report.md`, `report.html` (the same content,
figures inline), `figures/*.png` and `tables/*.csv`. Figures and tables are rebuilt on every
call (cheap next to training); the runs' checkpoints and evaluations are only read.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import traceback
from typing import Any, Callable, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np

from carjax.inference import Predictor
from carjax import explain
from carjax.study import data_figures
from carjax.study import gradcam_figures
from carjax.study import headline
from carjax.study import model_figures
from carjax.study import recipes
from carjax.study import results_figures
from carjax.study import training_figures
from carjax.study.measure import measure
from carjax.study.report_writer import Report
from carjax.study.runs import (ModelRun, all_models, ensure_ensemble_evaluation, headline_model,
                               is_extra,
                               model_configs, prepare_run, resolve_teachers, short_error,
                               train_seconds_of)
from carjax import checkpoint as ckpt
from carjax import workdir as workdir_lib
from carjax.data import loading

# Headline metrics of the comparison table: (metrics.json key, column title).
HEADLINE_METRICS = (
    ("accuracy", "accuracy"), ("weighted_precision", "weighted precision"),
    ("balanced_accuracy", "balanced accuracy"), ("macro_f1", "macro F1"),
    ("weighted_f1", "weighted F1"), ("top3_accuracy", "top-3 accuracy"))
_WITH_INTERVALS = {k for k, _ in headline.INTERVAL_METRICS}


@dataclasses.dataclass
class StudyResult:
  report_dir: str
  markdown_path: str
  html_path: str
  runs: dict[str, ModelRun]
  # Report sections that raised (each logged with its traceback): the rest was written.
  section_errors: list[str]


def _fmt(value, digits: int = 4) -> str:
  if value is None:
    return "–"
  if isinstance(value, (int, np.integer)):
    return f"{int(value):,}"
  return f"{float(value):.{digits}f}"


def _write_csv(path: str, header, rows) -> str:
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  return path


def _seed_summary_row(label: str, runs: Sequence[ModelRun]) -> list[str]:
  """A row of the answer: each figure over the seeds, and the first seed's accuracy."""
  per_seed = [r.metrics for r in runs]
  return ([label] + [str(headline.over_seeds(per_seed, k) or "–")
                     for k, _ in headline.INTERVAL_METRICS] +
          [headline.with_interval(runs[0].metrics, "accuracy")])


def _extra_kind(config) -> str:
  teacher = recipes.teacher_run_name(config)
  if teacher:
    return f"not from scratch, distilled from {teacher}"
  return "not a headline model"


class _ReportBuilder:
  """Writes the figures and tables of one study report and collects its blocks."""

  def __init__(self, study_config, workdir: str, runs: dict[str, ModelRun],
               configs: dict[str, ml_collections.ConfigDict]):
    self.study_config = study_config
    self.options = study_config.report
    self.runs = runs
    self.configs = configs
    self.split = study_config.data.eval_split
    self.workdir = workdir
    self.report_dir = os.path.join(workdir, "report")
    self.figure_dir = os.path.join(self.report_dir, "figures")
    self.table_dir = os.path.join(self.report_dir, "tables")
    for folder in (self.figure_dir, self.table_dir):
      shutil.rmtree(folder, ignore_errors=True)  # Ours alone: stale figures must go.
      os.makedirs(folder)
    self.report = Report("Car make recognition: " + " vs ".join(runs))
    self.section_errors: list[str] = []
    self.evaluated = [r for r in runs.values() if r.evaluated]
    self.predictors: dict[str, Predictor] = {}

  def figure_path(self, name: str) -> str:
    return os.path.join(self.figure_dir, name)

  def add_figure(self, path: str, caption: str) -> None:
    self.report.figure(os.path.relpath(path, self.report_dir), caption)

  def table_link(self, path: str) -> str:
    rel = os.path.relpath(path, self.report_dir)
    return f"[{rel}]({rel})"

  def guarded(self, title: str, build: Callable[[], None]) -> None:
    """Builds a section; a failure is logged and noted in the report, the rest goes on."""
    try:
      build()
    except Exception as e:  # pylint: disable=broad-except
      logging.error("Report section %r failed:\n%s", title, traceback.format_exc())
      self.section_errors.append(f"{title}: {short_error(e)}")
      self.report.paragraph(f"**This section could not be built** ({short_error(e)}); "
                            "the log has the traceback.")

  def predictor(self, run: ModelRun) -> Predictor:
    if run.name not in self.predictors:
      self.predictors[run.name] = Predictor(run.workdir, ckpt.BEST)
    return self.predictors[run.name]

  # -- data

  def open_data_source(self) -> None:
    data_cfg = self.study_config.data
    if not data_cfg.source and self.evaluated:
      # Reporting existing runs without --config.data.source: use the data they trained on.
      data_cfg = workdir_lib.load_run_config(self.evaluated[0].workdir).data
    self.source = loading.open_configured_source(data_cfg)

  def runs_section(self) -> None:
    self.report.heading("Runs")
    self.report.paragraph(
        f"Data `{self.study_config.data.source or '(from the runs)'}`; every model is "
        f"evaluated with its best checkpoint on the held-out split `{self.split}`.")
    rows = []
    for run in self.runs.values():
      m = run.metrics or {}
      rows.append([run.name, run.status, f"`{run.workdir}`",
                   _fmt(m.get("step")), _fmt(m.get("epoch")), run.detail or ""])
    self.report.table(["model", "status", "workdir", "best step", "best epoch", "note"], rows)
    missing = [r for r in self.runs.values() if not r.evaluated]
    if missing:
      self.report.paragraph("**Not in this report:** " + "; ".join(
          f"{r.name} ({r.status}: {r.detail})" for r in missing) + ".")

  def data_section(self) -> None:
    self.report.heading("Data")
    source = self.source
    class_names = list(source.class_names)
    splits, counts = data_figures.split_class_counts(source)
    path = data_figures.plot_class_counts(splits, counts, class_names,
                                          self.figure_path("data_class_counts.png"))
    table = _write_csv(os.path.join(self.table_dir, "class_counts.csv"),
                       ["make"] + list(splits),
                       [[c] + [int(v) for v in counts[:, i]] for i, c in enumerate(class_names)])
    self.report.paragraph(
        f"{len(class_names)} makes; " + ", ".join(
            f"{s}: {int(counts[i].sum())} images" for i, s in enumerate(splits)) +
        f". Counts per make: {self.table_link(table)}.")
    self.add_figure(path, "Images per make in each split.")

    sizes = {s: data_figures.record_image_sizes(source.records(s)) for s in splits}
    self.add_figure(data_figures.plot_image_sizes(sizes, self.figure_path("data_image_sizes.png")),
                    "Original photo sizes, read from the file headers (before resizing).")

    train_records = source.records(self.study_config.data.train_split)
    self.add_figure(data_figures.plot_samples_per_class(
        train_records, class_names, self.options.samples_per_class, self.options.seed,
        self.figure_path("data_samples.png"), split=self.study_config.data.train_split),
        "Sample photos of every make.")

    record = train_records[self.options.augmentation_photo % len(train_records)]
    from carjax.data import decode  # pylint: disable=g-import-not-at-top
    photo = decode.load_rgb(record.data if record.data is not None else record.path,
                            name=record.name)
    data_configs = {name: cfg.data for name, cfg in self.configs.items()}
    self.add_figure(data_figures.plot_augmentations(
        photo, data_configs, self.options.augmentation_views, self.options.seed,
        self.figure_path("data_augmentations.png"), os.path.basename(record.name)),
        "What training sees: random augmentations of one photo, per model's settings.")

  # -- the answer

  def runs_by_model(self, extra: bool = False) -> dict[str, list[ModelRun]]:
    """{model: its evaluated runs} of the headline models (`extra`: of the extra ones)."""
    grouped: dict[str, list[ModelRun]] = {}
    for run in self.evaluated:
      model = headline_model(run.name, self.study_config)
      if is_extra(model, self.study_config) == extra:
        grouped.setdefault(model, []).append(run)
    return grouped

  def answer_section(self) -> None:
    self.report.heading("Answer")
    grouped = self.runs_by_model()
    if not grouped:
      self.report.paragraph("No model has been evaluated yet.")
      return
    extras = self.runs_by_model(extra=True)
    rows = [_seed_summary_row(name, runs) for name, runs in grouped.items()]
    rows += [_seed_summary_row(f"{name} (extra row: {_extra_kind(self.configs[runs[0].name])})",
                               runs) for name, runs in extras.items()]
    ensembles = self.seed_ensembles(grouped)
    for name, metrics in ensembles.items():
      rows.append([f"{name}: ensemble of its {len(grouped[name])} seeds (extra row)"] +
                  [headline.with_interval(metrics, k) for k, _ in headline.INTERVAL_METRICS] +
                  ["–"])
    for ref in self.options.get("reference_rows", {}).values():
      cells = ["–"] * len(headline.INTERVAL_METRICS)
      keys = [k for k, _ in headline.INTERVAL_METRICS]
      cells[keys.index(ref.metric)] = f"{ref.value:.2f} (as reported)"
      rows.append([ref.label] + cells + ["–"])
    self.report.table(["model"] + [f"{t}: mean (lowest–highest seed)"
                                   for _, t in headline.INTERVAL_METRICS] +
                      ["accuracy of the first seed [95 % interval]"], rows)
    if ensembles:
      self.report.paragraph(
          "Extra rows: the ensemble of a model's seeds classifies with the mean of their "
          "probabilities (evaluations in `ensembles/`). It is not one model: it costs the "
          "training and the inference of every seed, so it never stands for the model's "
          "own figure; its interval is over the photos, for the one ensemble.")
    minutes = {}
    for name, runs in grouped.items():
      seconds = train_seconds_of(runs[0].workdir, runs[0].metrics)
      minutes[name] = None if seconds is None else seconds / 60
    names = list(grouped)
    paired = None
    if len(names) >= 2:
      paired = (names[0], names[1], headline.paired_test(grouped[names[0]][0].eval_dir,
                                                         grouped[names[1]][0].eval_dir))
    references = {ref.label: {"metric": ref.metric, "value": ref.value}
                  for ref in self.options.get("reference_rows", {}).values()}
    chosen_on = loading.selection_split(next(iter(self.configs.values())).data)
    self.report.paragraph("Conclusions, from the figures above (test split "
                          f"`{self.split}`):")
    self.report.bullets(headline.conclusions(
        {n: [r.metrics for r in runs] for n, runs in grouped.items()}, test_split=self.split,
        chosen_on=chosen_on, references=references, paired=paired, minutes=minutes))

  def seed_ensembles(self, grouped: dict[str, list[ModelRun]]) -> dict[str, dict[str, Any]]:
    """{model: metrics of the ensemble of its seeds} for every model with two seeds or more
    evaluated (with `report.seed_ensembles`)."""
    if not self.options.get("seed_ensembles", False):
      return {}
    return {name: ensure_ensemble_evaluation(
                [r.workdir for r in runs], self.split,
                os.path.join(self.workdir, "ensembles", name))
            for name, runs in grouped.items() if len(runs) >= 2}

  def recipe_section(self) -> None:
    self.report.heading("Recipes")
    rows = []
    for name in all_models(self.study_config):
      if name not in self.configs:
        continue
      run_dir = os.path.join(self.workdir, name)
      speed = training_figures.median_train_images_per_s(workdir_lib.read_metric_lines(run_dir))
      seconds = train_seconds_of(run_dir)
      rows.append(recipes.recipe_row(name, self.configs[name]) +
                  [_fmt(None if seconds is None else seconds / 60, 1), _fmt(speed, 1)])
    self.report.table(list(recipes.RECIPE_COLUMNS) + ["training (min)", "images/s"], rows)
    self.report.paragraph(
        "How each model was trained (from its config; the first seed's run for the minutes "
        "and images/s, as logged on the machine it trained on).")

  # -- comparison

  def comparison_section(self) -> None:
    self.report.heading("Side by side")
    if not self.evaluated:
      self.report.paragraph("No model has been evaluated yet.")
      return
    facts = {r.name: measure(r, self.predictor(r), self.options) for r in self.evaluated}
    header = (["model", "status", "eval_split", "count", "step", "epoch"] +
              [k for k, _ in HEADLINE_METRICS] +
              ["parameters", "checkpoint_bytes", "train_seconds", "train_images_per_s",
               "inference_ms_per_image"])
    csv_rows, md_rows = [], []
    for run in self.evaluated:
      m, f = run.metrics, facts[run.name]
      csv_rows.append([run.name, run.status, m.get("evaluated_on"), m.get("count"),
                       m.get("step"), m.get("epoch")] +
                      [repr(float(m[k])) for k, _ in HEADLINE_METRICS] +
                      [f.parameters, f.checkpoint_bytes, f.train_seconds,
                       f.train_images_per_s, f.inference_ms_per_image])
      minutes = None if f.train_seconds is None else f.train_seconds / 60
      md_rows.append([run.name] + [headline.with_interval(m, k) if k in _WITH_INTERVALS
                                   else _fmt(m[k], 3) for k, _ in HEADLINE_METRICS] +
                     [_fmt(f.parameters), _fmt(f.checkpoint_bytes / 1e6, 1), _fmt(minutes, 1),
                      _fmt(f.train_images_per_s, 1), _fmt(f.inference_ms_per_image, 2)])
    table = _write_csv(os.path.join(self.table_dir, "comparison.csv"), header, csv_rows)
    self.report.table(
        ["model"] + [title for _, title in HEADLINE_METRICS] +
        ["parameters", "checkpoint (MB)", "training (min)", "training images/s",
         "inference ms/image"], md_rows)
    self.report.paragraph(
        f"Metrics on `{self.split}` ({self.table_link(table)}), with 95 % intervals in "
        "brackets (accuracy: Wilson; weighted precision and macro F1: bootstrap over the "
        "photos): macro averages run over the "
        "makes present, weighted ones weight each make by its images. Checkpoint: the best "
        "checkpoint on disk, optimiser state included. Training time and images/s: as logged "
        "by the run on the machine it trained on (images/s is the median over logging "
        "windows). Inference: batches of "
        f"{self.options.inference_batch_size} on this machine ({jax.default_backend()}), warm, "
        f"median of {self.options.inference_repeats}.")

    per_class = {}
    for run in self.evaluated:
      rows = results_figures.read_csv_rows(os.path.join(run.eval_dir, workdir_lib.EVAL_PER_CLASS))
      per_class[run.name] = {r["class"]: float(r["f1"]) for r in rows}
    class_names = list(dict.fromkeys(c for scores in per_class.values() for c in scores))
    f1_table = _write_csv(os.path.join(self.table_dir, "per_class_f1.csv"),
                          ["make"] + list(per_class),
                          [[c] + [per_class[m].get(c, "") for m in per_class]
                           for c in class_names])
    self.add_figure(results_figures.plot_per_class_f1(
        per_class, class_names, self.figure_path("compare_per_class_f1.png")),
        f"F1 of every make, model against model ({self.table_link(f1_table)}).")
    points = [{"model": r.name, "train_minutes": (facts[r.name].train_seconds or 0) / 60,
               "accuracy": r.metrics["accuracy"], "macro_f1": r.metrics["macro_f1"]}
              for r in self.evaluated]
    self.add_figure(results_figures.plot_quality_vs_time(
        points, self.figure_path("compare_quality_vs_time.png")),
        "Quality against training time: up and to the left is better.")

  # -- per model

  def model_section(self, run: ModelRun) -> None:
    self.report.heading(f"Model: {run.name}")
    if run.detail:
      self.report.paragraph(f"Status: {run.status} ({run.detail}).")
    lines = workdir_lib.read_metric_lines(run.workdir)
    if lines:
      chosen_on = loading.selection_split(self.configs[run.name].data)
      self.add_figure(training_figures.plot_learning_curves(
          lines, chosen_on, f"{run.name}: learning curves",
          self.figure_path(f"{run.name}_learning_curves.png")),
          f"{run.name}: cross-entropy and accuracy per epoch (train: averaged over the epoch, "
          f"on augmented photos with dropout; {chosen_on}: at the epoch's end, the split the "
          "best checkpoint is chosen on), and the learning rates of every step.")
    self.add_figure(results_figures.plot_confusion(
        run.eval_dir, f"{run.name}: confusion matrix on {self.split} "
                      f"(accuracy {run.metrics['accuracy']:.3f})",
        self.figure_path(f"{run.name}_confusion.png")),
        f"{run.name}: confusion matrix, each row normalised to the true make's images.")
    rows = results_figures.read_csv_rows(os.path.join(run.eval_dir, workdir_lib.EVAL_PER_CLASS))
    table = os.path.join(self.table_dir, f"{run.name}_per_class.csv")
    shutil.copyfile(os.path.join(run.eval_dir, workdir_lib.EVAL_PER_CLASS), table)
    self.report.paragraph(f"Per-make scores of {run.name} ({self.table_link(table)}):")
    self.report.table(["make", "precision", "recall", "F1", "images"],
                      [[r["class"], r["precision"], r["recall"], r["f1"], r["support"]]
                       for r in rows])
    mistakes = results_figures.confident_mistakes(run.eval_dir, self.options.mistakes_shown)
    self.add_figure(results_figures.plot_confident_mistakes(
        mistakes, f"{run.name}: the most confident mistakes",
        self.figure_path(f"{run.name}_mistakes.png")),
        f"{run.name}: the {len(mistakes)} wrong predictions made with the highest confidence.")

  # -- inside the models

  def eval_records(self):
    return self.source.records(self.split)

  def load_for(self, predictor: Predictor, record) -> np.ndarray:
    return predictor.load_image(record.data if record.data is not None else record.path,
                                name=record.name)

  def feature_map_section(self) -> None:
    self.report.heading("Inside the models: feature maps")
    records = self.eval_records()
    record = records[self.options.feature_map_photo % len(records)]
    self.report.paragraph(
        f"One photo (`{os.path.basename(record.name)}`, true make "
        f"{self.source.class_names[record.label]}) after each layer: for every layer the "
        f"{self.options.feature_map_channels} most active channels, each scaled to its own "
        "range (white = strong). Early layers respond to edges and colours; deeper ones are "
        "smaller and more abstract.")
    layers_by_model = self.options.feature_map_layers
    for run in self.evaluated:
      predictor = self.predictor(run)
      photo = self.load_for(predictor, record)
      maps = explain.predictor_feature_maps(predictor, photo)
      maps = explain.select_layers(maps, layers_by_model.get(run.name))
      self.add_figure(model_figures.plot_feature_maps(
          photo, maps, self.options.feature_map_channels,
          f"{run.name}: feature maps of one photo, layer by layer",
          self.figure_path(f"{run.name}_feature_maps.png")),
          f"{run.name}: the photo after each layer (name, height×width×channels).")

  def gradcam_section(self) -> None:
    self.report.heading("Where the models look: Grad-CAM")
    records = _round_robin(self.eval_records(), len(self.source.class_names),
                           self.options.gradcam_photos, self.options.seed)
    true_names = [self.source.class_names[r.label] for r in records]
    target = self.options.gradcam_target
    if target not in ("predicted", "true"):
      raise ValueError(f"config.report.gradcam_target must be 'predicted' or 'true', "
                       f"got {target!r}")
    columns, layers = [], []
    for run in self.evaluated:
      predictor = self.predictor(run)
      images = np.stack([self.load_for(predictor, r) for r in records])
      targets = None
      if target == "true":
        targets = [predictor.class_names.index(n) if n in predictor.class_names else 0
                   for n in true_names]
      layer = self.options.gradcam_layers.get(run.name) or None
      layers.append(f"{run.name}: {layer or 'last feature map'}")
      heatmaps, probs = explain.predictor_gradcam(predictor, images, targets, layer)
      predicted = probs.argmax(axis=1)
      columns.append({"model": run.name, "images": images, "heatmaps": heatmaps,
                      "predicted": [predictor.class_names[p] for p in predicted],
                      "confidence": probs[np.arange(len(records)), predicted]})
    self.report.paragraph(
        "Grad-CAM weighs each channel of a convolutional feature map by the average "
        f"gradient of the {target} make's score, keeps the positive evidence and overlays it "
        "on the photo each model saw (✓ correct, ✗ wrong; the confidence in brackets). "
        f"Feature map used: {'; '.join(layers)}.")
    self.add_figure(gradcam_figures.plot_gradcam_grid(true_names, columns,
                                                      self.figure_path("gradcam.png"), target),
                    "Grad-CAM heat maps of held-out photos, the models side by side.")

  def build(self) -> StudyResult:
    self.runs_section()
    self.source = None
    self.guarded("Data source", self.open_data_source)
    if self.source is not None:
      self.guarded("Data", self.data_section)
    self.guarded("Answer", self.answer_section)
    self.guarded("Recipes", self.recipe_section)
    self.guarded("Side by side", self.comparison_section)
    for run in self.evaluated:
      if run.name in all_models(self.study_config):  # Each model's first seed; the rest: tables.
        self.guarded(f"Model {run.name}", lambda run=run: self.model_section(run))
    if self.evaluated and self.source is not None:
      # Both pick their photos from the held-out split of the data source.
      self.guarded("Feature maps", self.feature_map_section)
      self.guarded("Grad-CAM", self.gradcam_section)
    md_path, html_path = self.report.write(self.report_dir)
    return StudyResult(self.report_dir, md_path, html_path, self.runs, self.section_errors)


def _round_robin(records, num_classes: int, count: int, seed: int) -> list:
  """`count` records, one make after another (a seeded random photo of each)."""
  picked = data_figures.pick_records_per_class(records, num_classes, count, seed)
  out = []
  for depth in range(count):
    for c in range(num_classes):
      if len(out) < count and depth < len(picked[c]):
        out.append(picked[c][depth])
  return out


def run_study(study_config: ml_collections.ConfigDict, workdir: str,
              train_fn: Callable[[ml_collections.ConfigDict, str], Any] | None = None
              ) -> StudyResult:
  """Trains/reuses every model of `study_config` under `workdir`, then writes the report."""
  os.makedirs(workdir, exist_ok=True)
  configs = model_configs(study_config)
  resolve_teachers(configs, workdir, study_config)
  runs = {}
  for name, config in configs.items():
    runs[name] = prepare_run(name, config, os.path.join(workdir, name),
                             study_config.train_missing, train_fn)
    logging.info("Study: %s: %s (%s)", name, runs[name].status, runs[name].detail)
  result = _ReportBuilder(study_config, workdir, runs, configs).build()
  logging.info("Study report written to %s (%s).", result.html_path,
               ", ".join(f"{n}: {r.status}" for n, r in runs.items()))
  return result

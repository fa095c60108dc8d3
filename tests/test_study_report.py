"""The study report end to end on a tiny synthetic folder: train, report, reuse on rerun, missing
and unfinished runs."""

import csv
import json
import os
import re
import subprocess
import sys

import pytest

from carjax.study import report
from carjax.study import runs
from carjax import checkpoint as ckpt
from configs import custom_cnn
from configs import study as study_config
from tests.conftest import REPO_ROOT, write_synthetic_folder


def _study_config(source):
  config = study_config.get_config("tiny")
  config.data.source = f"folder:{source}"
  return config


def _mtime(path):
  return os.stat(path).st_mtime_ns


def _check_report(report_dir, model_names):
  """The report's files exist, reference each other, and respect the size budget."""
  with open(os.path.join(report_dir, "report.md")) as f:
    markdown = f.read()
  with open(os.path.join(report_dir, "report.html")) as f:
    html = f.read()
  figures = sorted(os.listdir(os.path.join(report_dir, "figures")))
  referenced = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", markdown)
  assert sorted(referenced) == [f"figures/{f}" for f in figures]
  expected = {"data_class_counts.png", "data_image_sizes.png", "data_samples.png",
              "data_augmentations.png", "compare_per_class_f1.png",
              "compare_quality_vs_time.png", "gradcam.png"}
  for name in model_names:
    expected |= {f"{name}_{kind}.png" for kind in
                 ("learning_curves", "confusion", "mistakes", "feature_maps")}
  assert expected <= set(figures)
  for figure in figures:
    assert os.path.getsize(os.path.join(report_dir, "figures", figure)) < 300_000, figure
  # The HTML stands alone: every figure inline, none linked.
  assert html.count('src="data:image/png;base64,') == len(figures)
  assert 'src="figures/' not in html
  for table in os.listdir(os.path.join(report_dir, "tables")):
    assert f"tables/{table}" in markdown
  # The answer: intervals, the Keras study's rows, conclusions with the paired test, and
  # the recipes side by side.
  assert "## Answer" in markdown and "## Recipes" in markdown
  assert "(as reported)" in markdown and "McNemar p =" in markdown
  assert "chosen on the dev split carved from train" in markdown
  assert re.search(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", markdown)
  return markdown


@pytest.mark.slow
def test_study_end_to_end_rerun_and_missing_runs(tmp_path):
  source = write_synthetic_folder(tmp_path / "cars")
  workdir = tmp_path / "study"
  config = _study_config(source)
  names = list(config.models)

  result = report.run_study(config, str(workdir))
  assert {n: r.status for n, r in result.runs.items()} == {n: runs.TRAINED for n in names}
  assert result.section_errors == []
  _check_report(result.report_dir, names)

  # The comparison table has one row per model, its metrics those of the run's evaluation.
  with open(os.path.join(result.report_dir, "tables", "comparison.csv")) as f:
    rows = {r["model"]: r for r in csv.DictReader(f)}
  assert sorted(rows) == sorted(names)
  for name in names:
    with open(workdir / name / "eval_best_val" / "metrics.json") as f:
      metrics = json.load(f)
    for key, _ in report.HEADLINE_METRICS:
      assert float(rows[name][key]) == metrics[key], (name, key)
    assert int(rows[name]["parameters"]) > 0
    assert float(rows[name]["inference_ms_per_image"]) > 0
    assert int(rows[name]["checkpoint_bytes"]) > 0

  # Rerun through the launcher: finished runs are reused, not retrained nor re-evaluated.
  before = {n: (ckpt.read_meta(str(workdir / n), ckpt.LAST)["step"],
                _mtime(workdir / n / "metrics.jsonl"),
                _mtime(workdir / n / "eval_best_val" / "metrics.json")) for n in names}
  proc = subprocess.run(
      [sys.executable, "-m", "launch.study", "--config=configs/study.py:tiny",
       f"--config.data.source=folder:{source}", f"--workdir={workdir}"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in names:
    assert f"{name}: reused" in proc.stdout
    after = (ckpt.read_meta(str(workdir / name), ckpt.LAST)["step"],
             _mtime(workdir / name / "metrics.jsonl"),
             _mtime(workdir / name / "eval_best_val" / "metrics.json"))
    assert after == before[name]

  # Report-only mode: a model without a run is listed as missing, and a run whose training
  # is not over (its config now asks for more epochs) is reported with its best checkpoint.
  unfinished = names[1]
  run_config_path = workdir / unfinished / "config.json"
  run_config = json.loads(run_config_path.read_text())
  run_config["train"]["num_epochs"] = 5
  run_config_path.write_text(json.dumps(run_config))
  config = _study_config(source)
  config.train_missing = False
  config.unlock()
  config.models.not_trained_yet = study_config.tiny_cnn_variant()
  # The study now tests high: the finished run is scored at its size, as launch.evaluate
  # --image_size=40 would, beside its own evaluation.
  config.models[names[0]].eval.image_size = (40, 40)
  config.lock()
  result = report.run_study(config, str(workdir))
  statuses = {n: r.status for n, r in result.runs.items()}
  assert statuses == {names[0]: runs.REUSED, unfinished: runs.UNFINISHED,
                      "not_trained_yet": runs.MISSING}
  assert "eval.image_size" in result.runs[names[0]].detail
  assert "study's evaluation settings (eval_best_val_40x40)" in result.runs[names[0]].detail
  assert result.runs[names[0]].metrics["image_size"] == [40, 40]
  assert (workdir / names[0] / "eval_best_val" / "metrics.json").is_file()
  assert "epoch 1 of 5" in result.runs[unfinished].detail
  assert not (workdir / "not_trained_yet").exists()
  assert result.section_errors == []
  markdown = _check_report(result.report_dir, names)
  assert "not_trained_yet (missing" in markdown


def test_seeds_get_an_ensemble_row_and_a_distilled_model_an_extra_row(tmp_path):
  source = write_synthetic_folder(tmp_path / "cars")
  workdir = tmp_path / "study"
  config = _study_config(source)
  config.unlock()
  del config.models["tiny_cnn_avgpool"]
  config.seeds = (0, 1)
  student = custom_cnn.get_config("tiny")
  student.train.num_epochs = 1
  student.train.teacher_workdir = "@tiny_cnn"
  config.extra_models.tiny_distilled = student
  config.lock()
  result = report.run_study(config, str(workdir))
  assert result.section_errors == []
  assert {n: r.status for n, r in result.runs.items()} == {
      n: runs.TRAINED for n in ("tiny_cnn", "tiny_cnn_seed1", "tiny_distilled",
                                "tiny_distilled_seed1")}
  # Each seed of the student learnt from the teacher's run of the same seed.
  for student_run, teacher_run in (("tiny_distilled", "tiny_cnn"),
                                   ("tiny_distilled_seed1", "tiny_cnn_seed1")):
    taught = json.loads((workdir / student_run / "config.json").read_text())
    assert taught["train"]["teacher_workdir"] == str(workdir / teacher_run)
    assert (workdir / student_run / "teacher_logits.npz").is_file()
  ensemble_dir = workdir / "ensembles" / "tiny_cnn"
  metrics = json.loads((ensemble_dir / "metrics.json").read_text())
  assert [m["workdir"] for m in metrics["ensemble"]] == [
      str(workdir / "tiny_cnn"), str(workdir / "tiny_cnn_seed1")]
  with open(result.markdown_path) as f:
    markdown = f.read()
  row = next(l for l in markdown.splitlines() if "ensemble of its 2 seeds (extra row)" in l)
  assert f"{metrics['accuracy']:.3f} [" in row
  assert "tiny_distilled (extra row: not from scratch, distilled from tiny_cnn)" in markdown
  assert "**tiny_distilled**" not in markdown  # Never in the headline conclusions.
  assert "not from scratch: distilled from tiny_cnn (weight 0.5, T 2)" in markdown  # Recipes.
  # A second report reuses the ensemble's evaluation of the same checkpoints.
  before = _mtime(ensemble_dir / "metrics.json")
  report.run_study(config, str(workdir))
  assert _mtime(ensemble_dir / "metrics.json") == before

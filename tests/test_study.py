"""The study: end to end on a tiny synthetic folder (train, report, reuse on rerun, missing and
unfinished runs), and how it gives every model the study's data section."""

import csv
import json
import os
import re
import subprocess
import sys

import pytest

from carjax.reports import study
from carjax import checkpoint as ckpt
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

  result = study.run_study(config, str(workdir))
  assert {n: r.status for n, r in result.runs.items()} == {n: study.TRAINED for n in names}
  assert result.section_errors == []
  _check_report(result.report_dir, names)

  # The comparison table has one row per model, its metrics those of the run's evaluation.
  with open(os.path.join(result.report_dir, "tables", "comparison.csv")) as f:
    rows = {r["model"]: r for r in csv.DictReader(f)}
  assert sorted(rows) == sorted(names)
  for name in names:
    with open(workdir / name / "eval_best_val" / "metrics.json") as f:
      metrics = json.load(f)
    for key, _ in study.HEADLINE_METRICS:
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
  config.lock()
  result = study.run_study(config, str(workdir))
  statuses = {n: r.status for n, r in result.runs.items()}
  assert statuses == {names[0]: study.REUSED, unfinished: study.UNFINISHED,
                      "not_trained_yet": study.MISSING}
  assert "epoch 1 of 5" in result.runs[unfinished].detail
  assert not (workdir / "not_trained_yet").exists()
  assert result.section_errors == []
  markdown = _check_report(result.report_dir, names)
  assert "not_trained_yet (missing" in markdown


# ----------------------------------------------------------------------------- plumbing


def test_model_configs_apply_the_shared_data_section():
  config = study_config.get_config("tiny")
  config.data.source = "folder:/somewhere"
  config.data.eval_split = "test"
  configs = study.model_configs(config)
  assert set(configs) == set(config.models)
  for model_config in configs.values():
    assert model_config.data.source == "folder:/somewhere"
    assert model_config.data.eval_split == "test"
    assert model_config.data.image_size == (32, 32)  # Model-specific fields stay the model's.
  assert config.models.tiny_cnn.data.source == ""  # The study config itself is untouched.


# ------------------------------------------------------------------- seeds and headline


def test_every_model_runs_once_per_seed():
  config = study_config.get_config("tiny")
  config.unlock()
  config.seeds = (3, 7)
  configs = study.model_configs(config)
  assert list(configs) == ["tiny_cnn", "tiny_cnn_seed7", "tiny_cnn_avgpool",
                           "tiny_cnn_avgpool_seed7"]
  assert [c.seed for c in configs.values()] == [3, 7, 3, 7]
  assert study.model_of_run("tiny_cnn_avgpool_seed7", config.models) == "tiny_cnn_avgpool"
  assert study.model_of_run("tiny_cnn_seed7", config.models) == "tiny_cnn"
  # Only the seed differs between a model's runs.
  a, b = configs["tiny_cnn"].to_dict(), configs["tiny_cnn_seed7"].to_dict()
  assert {k for k in a if a[k] != b[k]} == {"seed"}


def test_headline_aggregates_seeds_and_writes_conclusions(tmp_path):
  from carjax.reports import headline
  runs = {"cnn": [{"accuracy": 0.70, "count": 779}, {"accuracy": 0.74, "count": 779}],
          "lite0": [{"accuracy": 0.86, "count": 779, "accuracy_ci95": [0.83, 0.88]}]}
  summary = headline.over_seeds(runs["cnn"], "accuracy")
  assert (round(summary.mean, 6), summary.low, summary.high, summary.seeds) == (0.72, 0.70,
                                                                               0.74, 2)
  assert str(summary) == "0.720 (0.700–0.740, 2 seeds)"
  assert headline.with_interval(runs["lite0"][0], "accuracy") == "0.860 [0.830, 0.880]"
  lo, hi = headline.interval_of(runs["cnn"][0], "accuracy")  # Wilson from the count.
  assert lo < 0.70 < hi and hi - lo < 0.07
  for name, right in (("a", [1] * 60 + [0] * 40), ("b", [1] * 40 + [0] * 60)):
    (tmp_path / name).mkdir()
    with open(tmp_path / name / "predictions.csv", "w") as f:
      f.write("file,true,predicted,confidence,correct\n")
      f.writelines(f"img{i}.jpg,A,A,0.9,{c}\n" for i, c in enumerate(right))
  n, p = headline.paired_test(str(tmp_path / "a"), str(tmp_path / "b"))
  assert n == 100 and p < 1e-4
  text = headline.conclusions(
      runs, test_split="val", chosen_on="dev", paired=("lite0", "cnn", (n, p)),
      references={"Keras CNN": {"metric": "accuracy", "value": 0.53}},
      minutes={"cnn": 50.0, "lite0": None})
  assert text[0].startswith("**lite0** classifies 86.0%")
  assert "lite0 leads cnn by 14.0 accuracy points" in text[2]
  assert "clear" in text[2]
  assert any("Keras CNN" in line and "0.53" in line for line in text)
  assert any("chosen on the dev split" in line for line in text)
  assert any("single seed" in line for line in text)  # lite0 has only one.

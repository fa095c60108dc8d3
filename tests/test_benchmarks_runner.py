"""benchmarks/runner.py and the report it writes: orchestration with fake workers, and one
real smoke run (tiny CNN, 32 px, carjax only) through `launch.benchmark`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import env, runner, stats
from benchmarks import report as bench_report
from benchmarks import settings as bench_settings
from tests.conftest import REPO_ROOT, write_synthetic_folder
from tests.helpers import bench_record


def test_run_benchmark_interleaves_and_reports_missing_stacks(monkeypatch, tmp_path):
  calls = []

  def fake_worker(task, settings, workdir, log=print):
    calls.append((task["round"], task["key"], task["model"]))
    seconds = {"carjax": 1.0, "torch_channels_last": 2.0, "torch_nchw": 4.0}[task["key"]]
    return {"round": task["round"], "key": task["key"], "stack": task["stack"],
            "model": task["model"], "status": "ok", "parameters": 10,
            "train": bench_record([seconds], 8), "infer": bench_record([seconds / 2], 8)}

  monkeypatch.setattr(runner, "run_worker", fake_worker)
  monkeypatch.setattr(env, "stack_available", lambda stack: (
      (False, "not installed (keras missing)") if stack == "keras" else (True, "")))
  settings = bench_settings.Settings(models=("tiny_cnn", "custom_cnn"),
                             stacks=("carjax", "keras", "torch"), rounds=2, data="",
                             command="python -m launch.benchmark --fake")
  report = runner.run_benchmark(settings, log=lambda *_: None)
  assert calls[:3] == [(0, "carjax", "tiny_cnn"), (0, "torch_channels_last", "tiny_cnn"),
                       (0, "torch_nchw", "tiny_cnn")]
  # The next round starts with the next stack.
  assert calls[6][:2] == (1, "torch_channels_last")
  assert len(calls) == 2 * 2 * 3 and not any(k == "keras" for _, k, _ in calls)
  assert report["stacks"]["keras"] == {"available": False,
                                       "reason": "not installed (keras missing)"}
  assert report["ratios"]["custom_cnn"]["train"]["carjax/torch_nchw"]["median"] == 4.0
  assert report["data"]["status"] == "no --data folder given"
  text = bench_report.markdown(report)
  assert "`python -m launch.benchmark --fake`" in text
  assert "not installed (keras missing)" in text
  assert "| custom_cnn | carjax/torch_nchw | 4.00× (4.00–4.00) |" in text
  json.dumps(report)  # Serialisable as it is.


def _positive(x):
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_smoke_run_writes_report(tmp_path):
  folder = write_synthetic_folder(tmp_path / "cars", per_split=(("train", 8),))
  output = tmp_path / "out" / "bench.json"
  cmd = [sys.executable, "-m", "launch.benchmark", "--models=tiny_cnn", "--stacks=carjax",
         "--image_size=32", "--train_batch=4", "--infer_batch=4", "--num_classes=3",
         "--rounds=1", "--repeats=2", "--steps=1", "--warmup=1", f"--data={folder}",
         "--env_variants=shipped,glibc,warm_cache", f"--output={output}", "--markdown"]
  proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  report = json.loads(output.read_text())
  for key in ("command", "settings", "thread_settings", "environment", "stacks", "runs",
              "pipeline_runs", "summary", "ratios", "pipeline"):
    assert key in report
  facts = report["environment"]
  assert facts["versions"]["jax"] and facts["versions"]["flax"] and facts["cpu_model"]
  assert facts["cpu_count"] >= 1 and facts["date"]

  run, warm, glibc = sorted(report["runs"], key=lambda r: r["key"] != "carjax")
  assert [r["key"] for r in report["runs"]] == ["carjax", "carjax+warm_cache", "carjax+glibc"]
  assert run["status"] == warm["status"] == glibc["status"] == "ok", report["runs"]
  assert run["malloc_tuning"] is True and glibc["malloc_tuning"] is False
  assert run["train_page_faults_per_step"] >= 0
  # The warm run loads the programs its cold ("shipped") run compiled and cached.
  assert (warm["train_first_call"]["compile_s"] < run["train_first_call"]["compile_s"]), (
      warm["train_first_call"], run["train_first_call"])
  for metric, batch in (("train", 4), ("infer", 4), ("e2e_train", 4)):
    assert len(run[metric]["seconds"]) == 2 and all(map(_positive, run[metric]["seconds"]))
    assert run[metric]["images_per_repeat"] == batch
  first = run["train_first_call"]
  assert all(_positive(first[k]) for k in ("trace_s", "compile_s", "first_run_s", "total_s"))
  assert run["parameters"] > 0 and run["e2e_data"]["from_cache"] is True

  summary = report["summary"]["tiny_cnn"]["carjax"]
  train_rates = stats.rates(run["train"]["seconds"], run["train"]["images_per_repeat"])
  assert summary["train"]["median"] == pytest.approx(float(np.median(train_rates)))

  (pipe,) = report["pipeline_runs"]
  assert pipe["status"] == "ok", pipe
  assert pipe["decode_cold"]["images_per_repeat"] == 24  # 3 classes × 8 training images
  feed_rates = stats.rates(pipe["host_feed"]["seconds"], pipe["host_feed"]["images_per_repeat"])
  vs = report["pipeline"]["vs_training"]["tiny_cnn"]
  assert vs["host_feed/train"] == pytest.approx(np.median(feed_rates) / np.median(train_rates))
  assert _positive(vs["augment/train"]) and _positive(vs["e2e/synthetic_train"])
  markdown = (tmp_path / "out" / "bench.md").read_text()
  assert report["command"] in markdown and "| tiny_cnn | carjax" in markdown
  assert "carjax (JAX/Flax, XLA) [warm_cache]" in markdown
  assert "carjax/carjax+glibc" in markdown

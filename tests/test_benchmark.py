"""The benchmark harness: statistics and ratios on fixed inputs, orchestration with fake
workers, and one real smoke run (tiny CNN, 32 px, carjax only) through `launch.benchmark`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from carjax import host_runtime
from benchmarks import env, runner, stats
from tests.conftest import REPO_ROOT, write_synthetic_folder


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------


def test_rates_divide_images_by_seconds():
  assert stats.rates([2.0, 0.5], 10) == [5.0, 20.0]
  with pytest.raises(ValueError):
    stats.rates([1.0, 0.0], 10)


@pytest.mark.parametrize("values", [[3.0], [1.0, 2.0], [5.0, 1.0, 4.0, 2.0, 100.0],
                                    [0.3, 0.1, 0.7, 0.2, 0.9, 0.5]])
@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_quantile_matches_numpy(values, q):
  assert stats.quantile(values, q) == pytest.approx(float(np.quantile(values, q)))


def test_summarize_fixed_input():
  s = stats.summarize([5.0, 1.0, 4.0, 2.0, 100.0])
  assert s == {"n": 5, "median": 4.0, "min": 1.0, "max": 100.0, "q1": 2.0, "q3": 5.0,
               "iqr": 3.0, "mean": 22.4, "spread_pct": pytest.approx(100 * 99 / 4)}
  assert stats.summarize([]) is None


def test_ratio_and_range():
  a = stats.summarize([8.0, 10.0, 12.0])
  b = stats.summarize([4.0, 5.0])
  assert stats.ratio(a, b) == pytest.approx(10.0 / 4.5)
  assert stats.ratio_range(a, b) == pytest.approx((8.0 / 5.0, 12.0 / 4.0))
  assert stats.ratio(a, None) is None and stats.ratio(None, b) is None


def test_format_rate():
  assert stats.format_rate(stats.summarize([14.0, 15.0, 16.0])) == "15.0 (14.0–16.0)"
  assert stats.format_rate(stats.summarize([240.0, 250.0])) == "245 (240–250)"
  assert stats.format_rate(None) == "—"


# ---------------------------------------------------------------------------
# Aggregation and orchestration, on fixed fake worker results
# ---------------------------------------------------------------------------


def _record(seconds, images_per_step, steps=1):
  return {"seconds": seconds, "steps_per_repeat": steps, "images_per_step": images_per_step,
          "images_per_repeat": images_per_step * steps}


def _fake_runs():
  first = {"trace_s": 1.0, "lower_s": 0.5, "compile_s": 4.0, "first_run_s": 2.0,
           "total_s": 7.5}
  return [
      # carjax: train 20 images in 2 s and 4 s over two rounds → 10 and 5 img/s.
      {"round": 0, "key": "carjax", "stack": "carjax", "model": "m", "status": "ok",
       "parameters": 1000, "implementation": "x", "train": _record([2.0], 20),
       "infer": _record([1.0, 0.5], 40), "e2e_train": _record([4.0], 20),
       "train_first_call": first, "init_s": 3.0},
      {"round": 1, "key": "carjax", "stack": "carjax", "model": "m", "status": "ok",
       "parameters": 1000, "implementation": "x", "train": _record([4.0], 20),
       "infer": _record([2.0], 40), "train_first_call": first, "init_s": 5.0},
      # torch channels-last: 20 images in 5 s → 4 img/s; inference 40 in 4 s → 10.
      {"round": 0, "key": "torch_channels_last", "stack": "torch", "model": "m",
       "status": "ok", "parameters": 1000, "train": _record([5.0], 20),
       "infer": _record([4.0], 40), "train_first_call": {"total_s": 1.0}},
      {"round": 0, "key": "torch_nchw", "stack": "torch", "model": "m",
       "status": "error", "reason": "boom"},
  ]


def _fake_pipeline():
  return [{"round": 0, "key": "pipeline", "stack": "pipeline", "model": "m", "status": "ok",
           "decode_cold": _record([2.0], 100), "cache_warm": _record([0.1, 0.2], 100),
           "host_feed": _record([0.5, 0.25], 20, steps=5),
           "augment": _record([1.0], 20, steps=5)}]


def test_aggregate_fixed_runs():
  settings = runner.Settings(models=("tiny_cnn",), stacks=("carjax", "torch"))
  runs = [dict(r, model="tiny_cnn") for r in _fake_runs()]
  out = runner.aggregate(runs, _fake_pipeline(), settings)
  mine = out["summary"]["tiny_cnn"]["carjax"]
  assert mine["train"]["median"] == pytest.approx(7.5)  # median of 10 and 5
  assert mine["train_round_medians"] == [10.0, 5.0]
  assert mine["infer"]["median"] == pytest.approx(40.0)  # of 40, 80, 20
  assert mine["train_first_call"]["compile_s"]["median"] == 4.0
  assert mine["init_s"]["median"] == 4.0
  assert out["summary"]["tiny_cnn"]["torch_nchw"] == {
      "status": "error", "rounds_ok": 0, "rounds": 1, "reason": "boom"}
  ratios = out["ratios"]["tiny_cnn"]
  assert ratios["train"]["carjax/torch_channels_last"]["median"] == pytest.approx(7.5 / 4)
  assert ratios["train"]["carjax/torch_channels_last"]["range"] == pytest.approx((5 / 4, 10 / 4))
  assert ratios["infer"]["carjax/torch_channels_last"]["median"] == pytest.approx(4.0)
  assert "carjax/torch_nchw" not in ratios["train"]
  pipe = out["pipeline"]
  assert pipe["summary"]["decode_cold"]["median"] == 50.0
  assert pipe["summary"]["host_feed"]["median"] == pytest.approx(300.0)  # of 200 and 400
  vs = pipe["vs_training"]["tiny_cnn"]
  assert vs["host_feed/train"] == pytest.approx(300.0 / 7.5)
  assert vs["augment/train"] == pytest.approx(100.0 / 7.5)
  assert vs["train_without_augment_est"] == pytest.approx(1 / (1 / 7.5 - 1 / 100.0))
  assert vs["e2e/synthetic_train"] == pytest.approx(5.0 / 7.5)


def test_run_benchmark_interleaves_and_reports_missing_stacks(monkeypatch, tmp_path):
  calls = []

  def fake_worker(task, settings, workdir, log=print):
    calls.append((task["round"], task["key"], task["model"]))
    seconds = {"carjax": 1.0, "torch_channels_last": 2.0, "torch_nchw": 4.0}[task["key"]]
    return {"round": task["round"], "key": task["key"], "stack": task["stack"],
            "model": task["model"], "status": "ok", "parameters": 10,
            "train": _record([seconds], 8), "infer": _record([seconds / 2], 8)}

  monkeypatch.setattr(runner, "run_worker", fake_worker)
  monkeypatch.setattr(env, "stack_available", lambda stack: (
      (False, "not installed (keras missing)") if stack == "keras" else (True, "")))
  settings = runner.Settings(models=("tiny_cnn", "custom_cnn"),
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
  text = runner.markdown(report)
  assert "`python -m launch.benchmark --fake`" in text
  assert "not installed (keras missing)" in text
  assert "| custom_cnn | carjax/torch_nchw | 4.00× (4.00–4.00) |" in text
  json.dumps(report)  # Serialisable as it is.


def test_environment_variants_set_each_workers_allocator_and_options():
  settings = runner.Settings(models=("tiny_cnn",), stacks=("carjax", "keras", "torch"),
                             torch_layouts=("nchw",), env_variants=runner.ENV_VARIANTS)
  keys = {k[0]: k for k in runner.stack_keys(settings)}
  assert sorted(keys) == sorted([
      "carjax", "keras", "torch_nchw", "keras+hugepages", "torch_nchw+hugepages", "carjax+glibc",
      "carjax+no_xla_options", "carjax+warm_cache"])
  has_heap = host_runtime.malloc_tuning_in_effect
  no_heap = lambda env: not host_runtime.malloc_tuning_in_effect(env)
  env_of = lambda key: runner.worker_env(settings, keys[key][1], keys[key][3])
  assert has_heap(env_of("carjax")) and has_heap(env_of("keras+hugepages"))
  assert has_heap(env_of("torch_nchw+hugepages")) and has_heap(env_of("carjax+warm_cache"))
  assert no_heap(env_of("keras")) and no_heap(env_of("torch_nchw"))
  assert no_heap(env_of("carjax+glibc"))
  assert env_of("carjax+glibc")[host_runtime.SWITCH] == "0"
  assert env_of("carjax+no_xla_options")["CARJAX_XLA_CPU_OPTIONS"] == "0"
  assert "CARJAX_XLA_CPU_OPTIONS" not in env_of("carjax")
  order = runner._warm_after_shipped(list(keys.values()))  # pylint: disable=protected-access
  names = [k[0] for k in order]
  assert names.index("carjax+warm_cache") == names.index("carjax") + 1
  with pytest.raises(ValueError, match="environment variant"):
    runner.Settings(env_variants=("tcmalloc",))


def test_settings_validation():
  with pytest.raises(ValueError, match="unknown model"):
    runner.Settings(models=("resnet",))
  with pytest.raises(ValueError, match="unknown stack"):
    runner.Settings(stacks=("mxnet",))
  with pytest.raises(ValueError, match="repeats"):
    runner.Settings(repeats=0)


# ---------------------------------------------------------------------------
# A real run: tiny CNN, 32 px, carjax only, tiny synthetic image folder
# ---------------------------------------------------------------------------


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


def test_breakdown_variants_change_only_what_they_say():
  from benchmarks import breakdown
  # 64 px and batch 8: at 32 px the last stages are 1x1, and training-mode BatchNorm over
  # two values per channel amplifies float rounding, so no two implementations agree there.
  small = dict(model_variant="lite0", num_classes=3, image_size=64, batch_size=8)
  results = {v: breakdown.time_variant(v, repeats=1, warmup=0, **small)
             for v in ("shifted", "grouped", "no_depthwise")}
  # Both depthwise implementations compute the same step; the stand-in does not.
  assert abs(results["shifted"]["loss"] - results["grouped"]["loss"]) < 1e-3
  assert abs(results["shifted"]["loss"] - results["no_depthwise"]["loss"]) > 1e-2
  # The stand-in is gone once the block ends.
  from carjax.models import depthwise
  with breakdown.depthwise_replaced_by_scale():
    assert depthwise.depthwise_conv2d.__name__ == "scale_only"
  assert depthwise.depthwise_conv2d.__name__ == "depthwise_conv2d"
  table = breakdown.markdown(list(results.values()), title="t")
  assert "| no_depthwise |" in table and "1.00×" in table
  with pytest.raises(ValueError, match="variant"):
    breakdown.build_step("bogus")


def test_breakdown_cnn_variants_compute_the_same_step_but_the_pooling_stand_in():
  from benchmarks import breakdown
  from carjax.models import cnn
  small = dict(num_classes=3, image_size=64, batch_size=4)
  results = {v: breakdown.time_variant(v, repeats=1, warmup=0, **small)
             for v in ("cnn", "cnn_flax_max_pool", "cnn_no_pool_cost")}
  # Both max poolings train the same step; the strided slice does not pool at all.
  assert results["cnn"]["loss"] == pytest.approx(results["cnn_flax_max_pool"]["loss"], rel=1e-5)
  assert abs(results["cnn"]["loss"] - results["cnn_no_pool_cost"]["loss"]) > 1e-3
  assert cnn.max_pool_2x2.__name__ == "max_pool_2x2"  # restored after each variant
  assert "| cnn_flax_max_pool |" in breakdown.markdown(list(results.values()), title="t")

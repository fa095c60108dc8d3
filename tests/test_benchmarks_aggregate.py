"""benchmarks/aggregate.py: summaries, speed ratios and the pipeline's share, on fixed fake
worker results."""

from __future__ import annotations

import pytest

from benchmarks import aggregate
from benchmarks import settings as bench_settings
from tests.helpers import bench_record


def _fake_runs():
  first = {"trace_s": 1.0, "lower_s": 0.5, "compile_s": 4.0, "first_run_s": 2.0,
           "total_s": 7.5}
  return [
      # carjax: train 20 images in 2 s and 4 s over two rounds → 10 and 5 img/s.
      {"round": 0, "key": "carjax", "stack": "carjax", "model": "m", "status": "ok",
       "parameters": 1000, "implementation": "x", "train": bench_record([2.0], 20),
       "infer": bench_record([1.0, 0.5], 40), "e2e_train": bench_record([4.0], 20),
       "train_first_call": first, "init_s": 3.0},
      {"round": 1, "key": "carjax", "stack": "carjax", "model": "m", "status": "ok",
       "parameters": 1000, "implementation": "x", "train": bench_record([4.0], 20),
       "infer": bench_record([2.0], 40), "train_first_call": first, "init_s": 5.0},
      # torch channels-last: 20 images in 5 s → 4 img/s; inference 40 in 4 s → 10.
      {"round": 0, "key": "torch_channels_last", "stack": "torch", "model": "m",
       "status": "ok", "parameters": 1000, "train": bench_record([5.0], 20),
       "infer": bench_record([4.0], 40), "train_first_call": {"total_s": 1.0}},
      {"round": 0, "key": "torch_nchw", "stack": "torch", "model": "m",
       "status": "error", "reason": "boom"},
  ]


def _fake_pipeline():
  return [{"round": 0, "key": "pipeline", "stack": "pipeline", "model": "m", "status": "ok",
           "decode_cold": bench_record([2.0], 100), "cache_warm": bench_record([0.1, 0.2], 100),
           "host_feed": bench_record([0.5, 0.25], 20, steps=5),
           "augment": bench_record([1.0], 20, steps=5)}]


def test_aggregate_fixed_runs():
  settings = bench_settings.Settings(models=("tiny_cnn",), stacks=("carjax", "torch"))
  runs = [dict(r, model="tiny_cnn") for r in _fake_runs()]
  out = aggregate.aggregate(runs, _fake_pipeline(), settings)
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

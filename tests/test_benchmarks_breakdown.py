"""benchmarks/breakdown.py: each variant changes only what it says."""

from __future__ import annotations

import pytest


def test_breakdown_variants_change_only_what_they_say():
  from benchmarks import breakdown
  # 64 px and batch 8: at 32 px the last stages are 1x1, and training-mode BatchNorm over
  # two values per channel amplifies float rounding, so no two implementations agree there.
  # A quarter of Lite0's width, one block a stage: every kind of block, compiled in seconds.
  small = dict(model_variant="lite0", num_classes=3, image_size=64, batch_size=8,
               model_overrides={"width": 0.25, "depth": 0.25, "head_channels": 64})
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

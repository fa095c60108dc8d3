"""Tests for carjax.data.splits: stratified train/val/test splitting."""

from __future__ import annotations

from carjax.data import splits


def test_stratified_split_keeps_one_training_item_per_stratum():
  result = splits.stratified_split({"x": [1, 2], "y": [3]}, val_fraction=0.4,
                                   test_fraction=0.4, seed=0)
  assert sorted(result["train"]) in ([1, 3], [2, 3])
  assert len(result["val"]) + len(result["test"]) == 1

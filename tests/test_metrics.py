"""Evaluation metrics against values worked out by hand."""

import numpy as np
import pytest

from carjax import metrics


def test_metrics_by_hand():
  labels = np.array([0, 0, 0, 1, 1, 2])
  predictions = np.array([0, 0, 1, 1, 2, 2])
  logits = np.eye(3)[predictions] * 5.0
  cm = metrics.confusion_matrix(labels, predictions, 3)
  assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
  m = metrics.headline_metrics(labels, logits, 3)
  precision = np.array([1.0, 0.5, 0.5])
  recall = np.array([2 / 3, 0.5, 1.0])
  f1 = 2 * precision * recall / (precision + recall)
  support = np.array([3, 2, 1])
  assert m["accuracy"] == pytest.approx(4 / 6)
  assert m["weighted_precision"] == pytest.approx(np.sum(precision * support) / 6)
  assert m["balanced_accuracy"] == pytest.approx(recall.mean())
  assert m["macro_f1"] == pytest.approx(f1.mean())
  assert m["weighted_f1"] == pytest.approx(np.sum(f1 * support) / 6)
  assert m["top3_accuracy"] == 1.0


def test_absent_classes_do_not_count_in_macro_averages():
  labels = np.array([0, 0, 1])
  predictions = np.array([0, 2, 1])  # Class 2 is predicted once but never present.
  m = metrics.headline_metrics(labels, np.eye(4)[predictions], 4)
  assert m["macro_f1"] == pytest.approx(np.mean([2 * 1 * 0.5 / 1.5, 1.0]))
  assert m["balanced_accuracy"] == pytest.approx(0.75)


def test_top_k():
  logits = np.array([[0.1, 0.5, 0.4], [0.9, 0.03, 0.07]])
  assert metrics.top_k_accuracy(np.array([2, 1]), logits, 1) == 0.0
  assert metrics.top_k_accuracy(np.array([2, 1]), logits, 2) == 0.5
  assert metrics.top_k_accuracy(np.array([2, 1]), logits, 3) == 1.0


def test_wilson_interval_matches_the_formula():
  lo, hi = metrics.wilson_interval(653, 779)
  n, p, z = 779, 653 / 779, 1.959963984540054
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  assert abs(lo - (centre - half)) < 1e-9 and abs(hi - (centre + half)) < 1e-9
  assert metrics.wilson_interval(0, 10)[0] == 0.0 and metrics.wilson_interval(10, 10)[1] == 1.0


def test_intervals_contain_the_figure_and_shrink_with_more_images():
  rng = np.random.default_rng(0)
  def run(n):
    labels = rng.integers(0, 5, n)
    logits = rng.normal(size=(n, 5))
    logits[np.arange(n), labels] += 1.5
    return metrics.with_intervals(metrics.headline_metrics(labels, logits, 5), labels,
                                  logits, 5)
  small, large = run(100), run(2000)
  for s in (small, large):
    for key in ("accuracy", "weighted_precision", "macro_f1"):
      lo, hi = s[f"{key}_ci95"]
      assert lo <= s[key] <= hi
  width = lambda s, k: s[f"{k}_ci95"][1] - s[f"{k}_ci95"][0]
  for key in ("accuracy", "weighted_precision", "macro_f1"):
    assert width(large, key) < width(small, key) / 2


def test_mcnemar_counts_only_disagreements():
  a = np.array([1] * 50 + [0] * 10, bool)
  assert metrics.mcnemar_p_value(a, a) == 1.0
  b = a.copy()
  b[:12] = False  # b misses 12 images a gets right, and gets none a misses.
  assert metrics.mcnemar_p_value(a, b) < 0.001
  c = a.copy()
  c[:3], c[-3:] = False, True  # 3 each way: no evidence of a difference.
  assert metrics.mcnemar_p_value(a, c) == 1.0

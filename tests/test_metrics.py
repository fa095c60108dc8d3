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

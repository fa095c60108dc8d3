"""Classification metrics from labels and logits, as the study reports them.

Averaging convention (stated because the figures depend on it): per-class precision, recall
and F1 are computed for every class of the dataset; the macro averages (macro F1, balanced
accuracy) run over the classes *present in the evaluated labels* (support > 0), and the
weighted averages weight each class by its support, so absent classes carry no weight in
either. A class never predicted has precision 0 (scikit-learn's `zero_division=0`).
"Weighted precision" is the study's headline figure, which it called weighted accuracy.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
  """counts[i, j] = number of images of true class i predicted as class j."""
  return np.bincount(labels * num_classes + predictions,
                     minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
  """precision, recall, f1 and support per class (0 where undefined)."""
  true_pos = np.diag(confusion).astype(np.float64)
  support = confusion.sum(axis=1).astype(np.float64)
  predicted = confusion.sum(axis=0).astype(np.float64)
  precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
  recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=support > 0)
  denom = precision + recall
  f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(true_pos), where=denom > 0)
  return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(int)}


def top_k_accuracy(labels: np.ndarray, logits: np.ndarray, k: int) -> float:
  k = min(k, logits.shape[1])
  top = np.argsort(-logits, axis=1)[:, :k]
  return float(np.mean(np.any(top == labels[:, None], axis=1)))


def headline_metrics(labels: np.ndarray, logits: np.ndarray, num_classes: int) -> dict[str, float]:
  """accuracy, weighted precision, balanced accuracy, macro/weighted F1, top-3/top-5."""
  labels = np.asarray(labels)
  predictions = np.argmax(logits, axis=1)
  scores = per_class_scores(confusion_matrix(labels, predictions, num_classes))
  present = scores["support"] > 0
  weights = scores["support"] / max(scores["support"].sum(), 1)
  return {
      "accuracy": float(np.mean(predictions == labels)),
      "weighted_precision": float(np.sum(weights * scores["precision"])),
      "balanced_accuracy": float(np.mean(scores["recall"][present])),
      "macro_f1": float(np.mean(scores["f1"][present])),
      "weighted_f1": float(np.sum(weights * scores["f1"])),
      "top3_accuracy": top_k_accuracy(labels, logits, 3),
      "top5_accuracy": top_k_accuracy(labels, logits, 5),
  }


def format_summary(summary: dict) -> str:
  keys = ("loss", "accuracy", "weighted_precision", "macro_f1", "top3_accuracy")
  return ", ".join(f"{k} {summary[k]:.4f}" for k in keys if k in summary)

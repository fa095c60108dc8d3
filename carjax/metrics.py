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


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
  """The Wilson score interval of a proportion (e.g. accuracy = correct / images).

  Unlike the normal approximation it stays inside [0, 1] and is honest near 0 and 1 and for
  small splits; it treats the images as independent draws from the photos the split stands
  for, which is all a single test split can say.
  """
  if total <= 0:
    return (float("nan"), float("nan"))
  from scipy import stats  # pylint: disable=g-import-not-at-top
  ci = stats.binomtest(int(successes), int(total)).proportion_ci(confidence, method="wilson")
  return float(ci.low), float(ci.high)


def bootstrap_intervals(labels: np.ndarray, logits: np.ndarray, num_classes: int, *,
                        resamples: int = 2000, seed: int = 0,
                        confidence: float = 0.95) -> dict[str, tuple[float, float]]:
  """Percentile-bootstrap intervals (images resampled with replacement) of the metrics that
  are not simple proportions: weighted precision and macro F1."""
  labels = np.asarray(labels)
  predictions = np.argmax(logits, axis=1)
  rng = np.random.default_rng(seed)
  draws = {"weighted_precision": [], "macro_f1": []}
  for _ in range(resamples):
    pick = rng.integers(0, len(labels), len(labels))
    scores = per_class_scores(confusion_matrix(labels[pick], predictions[pick], num_classes))
    present = scores["support"] > 0
    weights = scores["support"] / max(scores["support"].sum(), 1)
    draws["weighted_precision"].append(np.sum(weights * scores["precision"]))
    draws["macro_f1"].append(np.mean(scores["f1"][present]))
  tail = (1.0 - confidence) / 2 * 100
  return {k: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail)))
          for k, v in draws.items()}


def with_intervals(summary: dict, labels: np.ndarray, logits: np.ndarray,
                   num_classes: int) -> dict:
  """`summary` plus 95 % intervals: `accuracy_ci95` (Wilson), `weighted_precision_ci95` and
  `macro_f1_ci95` (bootstrap), each as [low, high]."""
  labels = np.asarray(labels)
  if len(labels) == 0:
    return dict(summary)
  correct = int(np.sum(np.argmax(logits, axis=1) == labels))
  out = dict(summary, accuracy_ci95=list(wilson_interval(correct, len(labels))))
  for key, ci in bootstrap_intervals(labels, logits, num_classes).items():
    out[f"{key}_ci95"] = list(ci)
  return out


def mcnemar_p_value(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
  """Exact two-sided McNemar test of two models scored on the same images: the p-value that
  their accuracies differ only by chance (a binomial test on the images they disagree on)."""
  a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
  only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
  if only_a + only_b == 0:
    return 1.0
  from scipy import stats  # pylint: disable=g-import-not-at-top
  return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)

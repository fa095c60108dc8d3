"""matplotlib figures shared by evaluation and the study report (always the Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position


def plot_confusion_matrix(confusion: np.ndarray, class_names, path: str, title: str,
                          normalize: bool = True) -> None:
  """Row-normalised confusion matrix with class names on both axes."""
  counts = confusion.astype(np.float64)
  values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
  n = len(class_names)
  size = max(5.0, 0.42 * n + 2.5)
  fig, ax = plt.subplots(figsize=(size + 1.2, size))
  im = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
  ax.set_xticks(range(n), labels=class_names, rotation=60, ha="right", fontsize=8)
  ax.set_yticks(range(n), labels=class_names, fontsize=8)
  ax.set_xlabel("predicted make")
  ax.set_ylabel("true make")
  ax.set_title(title)
  if n <= 30:
    for i in range(n):
      for j in range(n):
        if counts[i, j]:
          ax.text(j, i, f"{values[i, j]:.2f}" if normalize else int(counts[i, j]),
                  ha="center", va="center", fontsize=6,
                  color="white" if values[i, j] > 0.5 else "black")
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04,
               label="share of the true make" if normalize else "images")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)

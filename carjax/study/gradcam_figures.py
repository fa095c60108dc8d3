"""The study's Grad-CAM figure: each model's heat map (`carjax.explain.gradcam`) over its photo."""

from __future__ import annotations

from typing import Sequence


from carjax import plotting
from carjax.plotting import plt


def plot_gradcam_grid(true_names: Sequence[str], columns: Sequence[dict], path: str,
                      target: str = "predicted") -> str:
  """One row per photo: the photo, then each model's heat map over its own input.

  `columns`: [{'model', 'images' uint8 [N, S, S, 3], 'heatmaps' [N, S, S],
  'predicted' [N] names, 'confidence' [N]}] (each model sees the photo at its own size).
  """
  rows, cols = len(true_names), len(columns) + 1
  fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.45 * rows + 0.8), squeeze=False)
  for i, true_name in enumerate(true_names):
    plotting.show_photo(axes[i, 0], columns[0]["images"][i], "photo" if i == 0 else "", 9)
    axes[i, 0].set_ylabel(f"true: {true_name}", fontsize=9)
    for j, col in enumerate(columns, start=1):
      ax = axes[i, j]
      ax.imshow(col["images"][i])
      ax.imshow(col["heatmaps"][i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
      ax.set_xticks([])
      ax.set_yticks([])
      mark = "✓" if col["predicted"][i] == true_name else "✗"
      verdict = f"{mark} {col['predicted'][i]} ({col['confidence'][i]:.2f})"
      # The model's name heads its column once; each cell says what it predicted.
      ax.set_title(f"{col['model']}\n{verdict}" if i == 0 else verdict, fontsize=8)
  fig.suptitle(f"Grad-CAM: evidence for the {target} class (red = strong)", fontsize=10)
  fig.tight_layout()
  return plotting.save_figure(fig, path)



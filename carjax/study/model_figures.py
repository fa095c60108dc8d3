"""The study's feature-map figure: the maps of one photo (`carjax.explain.feature_maps`) as tiles.
"""

from __future__ import annotations

import numpy as np

from carjax import explain
from carjax import plotting
from carjax.plotting import plt


def plot_feature_maps(photo: np.ndarray, maps: list[tuple[str, np.ndarray]], channels: int,
                      title: str, path: str) -> str:
  """The input photo, then one row per layer: its `channels` strongest maps as grey tiles.

  Each tile is scaled to its own min..max, so weak but structured maps stay visible.
  """
  rows = len(maps) + 1
  cols = channels + 1  # a text column with the layer's name and shape
  fig, axes = plt.subplots(rows, cols, figsize=(1.0 * cols + 1.0, 1.0 * rows + 0.5),
                           squeeze=False,
                           gridspec_kw={"width_ratios": [2.0] + [1.0] * channels})
  for ax in axes.flat:
    plotting.hide_axis(ax)
  axes[0, 0].text(0.0, 0.5, f"input\n{photo.shape[0]}×{photo.shape[1]}×3", fontsize=8,
                  va="center", ha="left", transform=axes[0, 0].transAxes)
  axes[0, 1].imshow(photo)
  for row, (name, activations) in enumerate(maps, start=1):
    h, w, c = activations.shape
    axes[row, 0].text(0.0, 0.5, f"{name}\n{h}×{w}×{c}", fontsize=8, va="center", ha="left",
                      transform=axes[row, 0].transAxes)
    for j, channel in enumerate(explain.strongest_channels(activations, channels)):
      tile = activations[..., channel].astype(np.float32)
      span = float(tile.max() - tile.min())
      tile = (tile - tile.min()) / span if span > 0 else np.zeros_like(tile)
      axes[row, j + 1].imshow(tile, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return plotting.save_figure(fig, path)

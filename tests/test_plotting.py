"""What every figure shares: the PNG size budget, the heat-map overlay."""

import os

import numpy as np

from carjax import plotting


def test_png_budget_shrinks_a_photo_heavy_figure(tmp_path):
  fig, ax = plotting.plt.subplots(figsize=(8, 8))
  ax.imshow(np.random.default_rng(0).integers(0, 256, (400, 400, 3), np.uint8))
  path = plotting.save_figure(fig, str(tmp_path / "noise.png"), max_bytes=150_000)
  assert os.path.getsize(path) <= 150_000


def test_gradcam_overlay_colours_strong_evidence_red():
  photo = np.full((4, 4, 3), 128, np.uint8)
  heat = np.zeros((4, 4), np.float32)
  heat[0, 0] = 1.0
  over = plotting.overlay_heatmap(photo, heat).astype(int)
  assert over[0, 0, 0] > over[0, 0, 2]  # Strong: red.
  assert over[3, 3, 2] > over[3, 3, 0]  # None: blue.

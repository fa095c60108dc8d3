"""What every figure shares: the Agg backend, a size budget for PNGs, photo thumbnails, and the
confusion-matrix plot that evaluation and the study both draw."""

from __future__ import annotations

import io
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from PIL import Image, ImageOps  # pylint: disable=g-import-not-at-top,wrong-import-position

DPI = 100
# A report with ~20 figures stays a few MB, and its HTML (base64 images) opens quickly.
MAX_PNG_BYTES = 300_000


def save_figure(fig, path: str, dpi: int = DPI, max_bytes: int = MAX_PNG_BYTES) -> str:
  """Saves and closes `fig` as a PNG no larger than `max_bytes`; returns `path`."""
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  fit_png_budget(path, max_bytes)
  return path


def fit_png_budget(path: str, max_bytes: int = MAX_PNG_BYTES) -> None:
  """Shrinks a PNG over budget in place: a 256-colour palette first, then smaller pixels.

  Plots compress well; figures full of photos do not, and a palette (invisible on these
  small thumbnails) usually halves them. Only if that is not enough is the image downscaled.
  """
  if os.path.getsize(path) <= max_bytes:
    return
  with Image.open(path) as opened:
    image = opened.convert("RGB")
  scale = 1.0
  while True:
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    candidate = image if scale == 1.0 else image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    candidate.quantize(colors=256, dither=Image.Dither.NONE).save(buffer, "PNG", optimize=True)
    if buffer.tell() <= max_bytes or scale < 0.25:
      break
    scale *= 0.8
  with open(path, "wb") as f:
    f.write(buffer.getvalue())


def load_thumbnail(path_or_bytes, max_side: int) -> np.ndarray | None:
  """An upright RGB thumbnail (uint8 HxWx3) of an image file or bytes, or None if unreadable."""
  try:
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    with Image.open(source) as image:
      image.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale, much faster.
      image = ImageOps.exif_transpose(image).convert("RGB")
      image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
      return np.asarray(image)
  except Exception:  # pylint: disable=broad-except
    return None


def show_photo(ax, image: np.ndarray | None, title: str = "", fontsize: float = 7) -> None:
  """A photo on an axis without ticks; a grey 'unreadable' tile where there is none."""
  if image is None:
    ax.imshow(np.full((8, 8, 3), 200, np.uint8))
    ax.text(3.5, 3.5, "unreadable", ha="center", va="center", fontsize=fontsize)
  else:
    ax.imshow(image)
  ax.set_xticks([])
  ax.set_yticks([])
  if title:
    ax.set_title(title, fontsize=fontsize)


def hide_axis(ax) -> None:
  ax.axis("off")


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


def overlay_heatmap(image_uint8: np.ndarray, heatmap: np.ndarray,
                    alpha: float = 0.45) -> np.ndarray:
  """The photo [S, S, 3] with the heat map [S, S] (0..1) blended over it in 'jet' colours,
  as in the study's figures (red = strong evidence); uint8 [S, S, 3]."""
  colours = plt.get_cmap("jet")(np.clip(heatmap, 0.0, 1.0))[..., :3] * 255.0
  blended = (1.0 - alpha) * image_uint8.astype(np.float32) + alpha * colours
  return np.clip(np.round(blended), 0, 255).astype(np.uint8)

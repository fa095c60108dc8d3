"""Figures of the data itself: class balance per split, photo sizes, samples, augmentations."""

from __future__ import annotations

import io
import math
from typing import Mapping, Sequence

import jax
import numpy as np
from PIL import Image

from carjax.data import augment
from carjax.data import decode
from carjax import plotting
from carjax.plotting import plt


def split_class_counts(source) -> tuple[tuple[str, ...], np.ndarray]:
  """(split names, counts [num splits, num classes]) of a data source's records."""
  splits = tuple(source.splits)
  counts = np.zeros((len(splits), len(source.class_names)), np.int64)
  for i, split in enumerate(splits):
    labels = [r.label for r in source.records(split)]
    counts[i] = np.bincount(labels, minlength=len(source.class_names))
  return splits, counts


def plot_class_counts(splits: Sequence[str], counts: np.ndarray, class_names: Sequence[str],
                      path: str) -> str:
  """Grouped bars: images of each class in each split."""
  n = len(class_names)
  fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * n + 2.0), 4.2))
  width = 0.8 / max(len(splits), 1)
  positions = np.arange(n)
  for i, split in enumerate(splits):
    ax.bar(positions + (i - (len(splits) - 1) / 2) * width, counts[i], width,
           label=f"{split} ({int(counts[i].sum())})")
  ax.set_xticks(positions, labels=class_names, rotation=55, ha="right", fontsize=8)
  ax.set_xlabel("make")
  ax.set_ylabel("images")
  ax.set_title("Images per make and split")
  ax.legend(title="split (total)")
  ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  return plotting.save_figure(fig, path)


def image_size_of(record) -> tuple[int, int] | None:
  """(width, height) from the file header only: PIL opens lazily and decodes no pixels."""
  try:
    source = io.BytesIO(record.data) if record.data is not None else record.path
    with Image.open(source) as image:
      return image.size
  except Exception:  # pylint: disable=broad-except
    return None


def record_image_sizes(records) -> np.ndarray:
  """[N, 2] (width, height) of the readable records."""
  sizes = [s for s in map(image_size_of, records) if s is not None]
  return np.asarray(sizes, np.int64).reshape(-1, 2)


def plot_image_sizes(sizes_by_split: Mapping[str, np.ndarray], path: str) -> str:
  """Original widths against heights (each photo a dot), and the distribution of each."""
  fig, (scatter_ax, hist_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
  for split, sizes in sizes_by_split.items():
    if len(sizes):
      scatter_ax.scatter(sizes[:, 0], sizes[:, 1], s=5, alpha=0.4, label=split)
  scatter_ax.set_xlabel("width (px)")
  scatter_ax.set_ylabel("height (px)")
  scatter_ax.set_title("Original photo sizes")
  scatter_ax.grid(alpha=0.3)
  if scatter_ax.get_legend_handles_labels()[0]:
    scatter_ax.legend(title="split", markerscale=3)
  every = [s for s in sizes_by_split.values() if len(s)]
  if every:
    all_sizes = np.concatenate(every)
    bins = np.linspace(0, max(int(all_sizes.max()), 1), 40)
    hist_ax.hist(all_sizes[:, 0], bins=bins, alpha=0.6, label="width")
    hist_ax.hist(all_sizes[:, 1], bins=bins, alpha=0.6, label="height")
    hist_ax.legend()
    hist_ax.set_title(f"Widths and heights of all {len(all_sizes)} photos "
                      f"(median {int(np.median(all_sizes[:, 0]))}×"
                      f"{int(np.median(all_sizes[:, 1]))})", fontsize=10)
  hist_ax.set_xlabel("pixels")
  hist_ax.set_ylabel("photos")
  hist_ax.grid(alpha=0.3)
  fig.tight_layout()
  return plotting.save_figure(fig, path)


def pick_records_per_class(records, num_classes: int, per_class: int, seed: int):
  """{label: up to `per_class` records}, a seeded random choice within each class."""
  rng = np.random.default_rng(seed)
  by_class: dict[int, list] = {c: [] for c in range(num_classes)}
  for r in records:
    by_class[r.label].append(r)
  return {c: [rs[i] for i in sorted(rng.permutation(len(rs))[:per_class])]
          for c, rs in by_class.items()}


def plot_samples_per_class(records, class_names: Sequence[str], per_class: int, seed: int,
                           path: str, split: str, thumb_px: int = 160) -> str:
  """A grid of a few photos of every make, each make's photos together under its name."""
  picked = pick_records_per_class(records, len(class_names), per_class, seed)
  # Several makes per row keep the figure from growing into a 20-row strip.
  blocks_per_row = max(1, min(len(class_names), 12 // max(per_class, 1)))
  rows = math.ceil(len(class_names) / blocks_per_row)
  cols = blocks_per_row * per_class
  fig, axes = plt.subplots(rows, cols, figsize=(1.15 * cols, 1.05 * rows + 0.6), squeeze=False)
  for ax in axes.flat:
    plotting.hide_axis(ax)
  for c, name in enumerate(class_names):
    row, block = divmod(c, blocks_per_row)
    for j in range(per_class):
      ax = axes[row, block * per_class + j]
      if j < len(picked[c]):
        r = picked[c][j]
        plotting.show_photo(ax, plotting.load_thumbnail(r.data or r.path, thumb_px))
        ax.axis("on")
      if j == 0:
        ax.set_title(name, fontsize=8, loc="left")
  fig.suptitle(f"Sample photos per make ({split} split)")
  fig.tight_layout()
  return plotting.save_figure(fig, path)


def augmented_views(image: np.ndarray, data_config, num_views: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(`num_views` training augmentations [V, S, S, 3], the resized photo) of one photo, as a
  run with `data_config` sees them.

  The photo is first resized as the cache does (image_size, resize_mode), then augmented by
  `augment.augment_image` with independent keys: exactly the training pipeline, one image.
  """
  resized = decode.resize_to(image, data_config.image_size, data_config.resize_mode)
  aug = data_config.augment
  fn = lambda key: augment.augment_image(
      key, resized, out_size=decode.image_hw(data_config.image_size),
      scale=tuple(aug.crop_scale),
      ratio=tuple(aug.crop_ratio), flip=aug.flip, jitter=aug.color_jitter)
  keys = jax.random.split(jax.random.key(seed), num_views)
  views = jax.jit(jax.vmap(fn))(keys)
  return np.clip(np.asarray(views), 0, 255).astype(np.uint8), resized


def plot_augmentations(image: np.ndarray, data_configs: Mapping[str, object], num_views: int,
                       seed: int, path: str, photo_name: str = "") -> str:
  """One row per model: the photo as cached, then `num_views` of its training augmentations."""
  names = list(data_configs)
  cols = num_views + 1
  fig, axes = plt.subplots(len(names), cols, figsize=(1.5 * cols, 1.65 * len(names) + 0.5),
                           squeeze=False)
  for row, name in enumerate(names):
    cfg = data_configs[name]
    views, resized = augmented_views(image, cfg, num_views, seed)
    plotting.show_photo(axes[row, 0], resized, "as cached" if row == 0 else "", fontsize=8)
    # The model on the left of its row, titles only above the first row: nothing overlaps.
    size_text = "×".join(map(str, decode.image_hw(cfg.image_size)))
    axes[row, 0].set_ylabel(f"{name}\n{size_text} px, crop scale ≥ "
                            f"{cfg.augment.crop_scale[0]}\njitter {cfg.augment.color_jitter}"
                            f"{', flip' if cfg.augment.flip else ''}", fontsize=7)
    for j, view in enumerate(views):
      plotting.show_photo(axes[row, j + 1], view, f"augmented #{j + 1}" if row == 0 else "",
                          fontsize=8)
  fig.suptitle(f"Training augmentations of one photo {photo_name}\n(random resized crop, "
               "flip, colour jitter: each model's own settings, on the left)", fontsize=9)
  fig.tight_layout()
  return plotting.save_figure(fig, path)

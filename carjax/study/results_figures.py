"""Figures of evaluation results, read back from an `eval_<which>_<split>/` folder.

Per model: the confusion matrix and the most confident mistakes; across models: per-class F1
side by side, and quality against training time.
"""

from __future__ import annotations

import csv
import os
from typing import Mapping, Sequence

import numpy as np

from carjax import plotting
from carjax import workdir as workdir_lib
from carjax.plotting import plt


def read_csv_rows(path: str) -> list[dict[str, str]]:
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def read_confusion(eval_dir: str) -> tuple[list[str], np.ndarray]:
  """(class names, counts [true, predicted]) from `confusion_matrix.csv`."""
  with open(os.path.join(eval_dir, workdir_lib.EVAL_CONFUSION), newline="") as f:
    rows = list(csv.reader(f))
  names = rows[0][1:]
  counts = np.array([[int(v) for v in row[1:]] for row in rows[1:]], np.int64)
  return names, counts


def plot_confusion(eval_dir: str, title: str, path: str) -> str:
  names, counts = read_confusion(eval_dir)
  plotting.plot_confusion_matrix(counts, names, path, title=title, normalize=True)
  plotting.fit_png_budget(path)
  return path


def confident_mistakes(eval_dir: str, count: int) -> list[dict[str, str]]:
  """The `count` wrong predictions made with the highest confidence, most confident first."""
  rows = [r for r in read_csv_rows(os.path.join(eval_dir, workdir_lib.EVAL_PREDICTIONS))
          if r["correct"] == "0"]
  rows.sort(key=lambda r: -float(r["confidence"]))
  return rows[:count]


def plot_confident_mistakes(mistakes: Sequence[Mapping[str, str]], title: str, path: str,
                            columns: int = 4, thumb_px: int = 200) -> str:
  """The photos of the most confident mistakes, each titled true → predicted (confidence)."""
  rows = max(1, -(-len(mistakes) // columns))
  fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.2 * rows + 0.5),
                           squeeze=False)
  for ax in axes.flat:
    plotting.hide_axis(ax)
  for ax, m in zip(axes.flat, mistakes):
    image = plotting.load_thumbnail(m["file"], thumb_px) if os.path.isfile(m["file"]) else None
    plotting.show_photo(ax, image, f"true: {m['true']}\npredicted: {m['predicted']} "
                                   f"({float(m['confidence']):.2f})", fontsize=8)
    ax.axis("on")
  if not mistakes:
    axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return plotting.save_figure(fig, path)


def plot_per_class_f1(per_class: Mapping[str, Mapping[str, float]], class_names: Sequence[str],
                      path: str) -> str:
  """Horizontal grouped bars: each make's F1 for every model ({model: {class: f1}})."""
  n, models = len(class_names), list(per_class)
  fig, ax = plt.subplots(figsize=(9.5, max(3.0, 0.32 * n * max(1, len(models)) ** 0.5 + 1.5)))
  height = 0.8 / max(len(models), 1)
  positions = np.arange(n)
  for i, model in enumerate(models):
    values = [per_class[model].get(c, np.nan) for c in class_names]
    ax.barh(positions + (i - (len(models) - 1) / 2) * height, values, height, label=model)
  ax.set_yticks(positions, labels=class_names, fontsize=8)
  ax.invert_yaxis()  # First class at the top, as in the tables.
  ax.set_xlim(0, 1)
  ax.set_xlabel("F1 on the held-out split")
  ax.set_ylabel("make")
  ax.set_title("Per-make F1, model against model")
  ax.grid(axis="x", alpha=0.3)
  ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="model")
  fig.tight_layout()
  return plotting.save_figure(fig, path)


def plot_quality_vs_time(points: Sequence[Mapping], path: str) -> str:
  """Accuracy and macro F1 against training minutes, one labelled point pair per model.

  `points`: [{'model', 'train_minutes', 'accuracy', 'macro_f1'}].
  """
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for i, p in enumerate(points):
    color = f"C{i}"
    ax.scatter(p["train_minutes"], p["accuracy"], color=color, marker="o", s=50,
               label=f"{p['model']} accuracy")
    ax.scatter(p["train_minutes"], p["macro_f1"], color=color, marker="s", s=50,
               facecolors="none", label=f"{p['model']} macro F1")
    ax.annotate(p["model"], (p["train_minutes"], p["accuracy"]), textcoords="offset points",
                xytext=(6, 6), fontsize=8)
  ax.set_xlabel("training time (minutes, this machine)")
  ax.set_ylabel("score on the held-out split")
  ax.set_ylim(0, 1.05)
  ax.set_xlim(left=0, right=max([p["train_minutes"] for p in points] + [1e-3]) * 1.25)
  ax.set_title("Quality against training time")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  return plotting.save_figure(fig, path)

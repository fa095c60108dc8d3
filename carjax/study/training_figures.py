"""What a run's `metrics.jsonl` says about its training: learning curves and throughput."""

from __future__ import annotations

import numpy as np

from carjax import plotting
from carjax.plotting import plt


def per_epoch(lines: list[dict], split: str) -> dict[int, dict]:
  """{epoch: the split's last line of that epoch}.

  The last line wins because a resumed run repeats the steps after its last checkpoint and
  appends them again; and a train line's loss/accuracy average the epoch so far, so the
  last one of an epoch is that epoch's figure.
  """
  epochs: dict[int, dict] = {}
  for line in lines:
    if line.get("split") == split and "epoch" in line:
      epochs[int(line["epoch"])] = line
  return dict(sorted(epochs.items()))


def median_train_images_per_s(lines: list[dict]) -> float | None:
  """Median training throughput over the logged windows (robust to the compile window)."""
  values = [line["images_per_s"] for line in lines
            if line.get("split") == "train" and "images_per_s" in line]
  return float(np.median(values)) if values else None


def plot_learning_curves(lines: list[dict], eval_split: str, title: str, path: str) -> str:
  """Loss and accuracy per epoch (train and `eval_split`), and the learning rates per step.

  Both loss curves are the plain cross-entropy (runs older than the `cross_entropy` train
  metric show their training objective instead, label smoothing included, and say so).
  """
  train, evaluation = per_epoch(lines, "train"), per_epoch(lines, eval_split)
  plain = any("cross_entropy" in line for line in train.values())
  fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
  loss_label = "loss (cross-entropy)" if plain else "loss (train: training objective)"
  for ax, key, label in ((axes[0], "loss", loss_label), (axes[1], "accuracy", "accuracy")):
    for history, name, style in ((train, "train", "o-"), (evaluation, eval_split, "s-")):
      field = "cross_entropy" if (key == "loss" and name == "train" and plain) else key
      epochs = [e for e, line in history.items() if field in line]
      if epochs:
        ax.plot(epochs, [history[e][field] for e in epochs], style, label=name, markersize=4)
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.set_title(label.split(" ")[0].capitalize())
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend()
    epochs_seen = sorted(set(train) | set(evaluation))
    if len(epochs_seen) <= 20:
      ax.set_xticks(epochs_seen)
  axes[1].set_ylim(0, 1.02)
  _plot_learning_rates(axes[2], lines)
  fig.suptitle(title)
  fig.tight_layout()
  return plotting.save_figure(fig, path)


def _plot_learning_rates(ax, lines: list[dict]) -> None:
  by_step: dict[int, dict] = {}
  for line in lines:  # The last line of a step wins, as in `per_epoch`.
    if line.get("split") == "train" and "lr_backbone" in line:
      by_step[int(line["step"])] = line
  steps = sorted(by_step)
  for key, name in (("lr_backbone", "backbone"), ("lr_head", "head")):
    if steps and any(key in by_step[s] for s in steps):
      ax.plot(steps, [by_step[s].get(key, np.nan) for s in steps], label=name)
  ax.set_xlabel("step")
  ax.set_ylabel("learning rate")
  ax.set_title("Learning rate")
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend()

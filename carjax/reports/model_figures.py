"""Inside a model: the feature maps of one photo after each layer the model sows.

Both architectures `sow` their intermediate activations into the 'intermediates' collection
(the custom CNN after every convolution and pooling, as `stageK/after_convJ` and
`stageK/after_pool`; EfficientNet after its stem, each stage and the head convolution), so
one `apply(..., mutable=['intermediates'])` yields every map without touching the models.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from carjax import plotting
from carjax.plotting import plt


def _flatten(tree, prefix: str = "") -> list[tuple[str, np.ndarray]]:
  """[('stage1/after_conv0', array), ...] in the order the model sowed them."""
  out = []
  for key, value in tree.items():
    name = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, tuple):  # sow appends to a tuple; the model sows each name once.
      out.append((name, np.asarray(value[-1])))
    else:
      out.extend(_flatten(value, name))
  return out


def feature_maps(model, variables, images: np.ndarray) -> list[tuple[str, np.ndarray]]:
  """[(layer name, activations [N, h, w, C])] of already normalised float `images`.

  Not jitted on purpose: jit's outputs are pytrees whose dict keys come back sorted, which
  would lose the order of the layers ('head_conv' before 'stem'); one eager forward pass of
  a photo or two is cheap.
  """
  # Variables straight from `init` may hold an 'intermediates' collection already; sow would
  # append to it, in its order, so start from the weights alone.
  variables = {k: v for k, v in variables.items() if k != "intermediates"}
  _, state = model.apply(variables, jnp.asarray(images), train=False, mutable=["intermediates"])
  return _flatten(state.get("intermediates", {}))  # No tree_map here either: it sorts keys.


def predictor_feature_maps(predictor, image_uint8: np.ndarray) -> list[tuple[str, np.ndarray]]:
  """Feature maps [(name, [h, w, C])] of one uint8 photo at the predictor's input size."""
  x = predictor.input_spec.normalize(image_uint8[None])
  return [(name, maps[0]) for name, maps in
          feature_maps(predictor.model, predictor.variables, np.asarray(x))]


def select_layers(maps: list[tuple[str, np.ndarray]],
                  wanted: Sequence[str] | None) -> list[tuple[str, np.ndarray]]:
  """The layers named in `wanted` (in the model's order), or all when `wanted` is empty."""
  if not wanted:
    return maps
  wanted = set(wanted)
  return [(name, m) for name, m in maps if name in wanted]


def strongest_channels(activations: np.ndarray, count: int) -> np.ndarray:
  """Indices of the `count` channels with the largest mean activation, strongest first.

  After a ReLU many channels are silent for a given photo; showing the first few channels
  would often show black tiles, the most active ones show what the layer responds to.
  """
  strength = activations.reshape(-1, activations.shape[-1]).mean(axis=0)
  return np.argsort(-strength, kind="stable")[:count]


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
    for j, channel in enumerate(strongest_channels(activations, channels)):
      tile = activations[..., channel].astype(np.float32)
      span = float(tile.max() - tile.min())
      tile = (tile - tile.min()) / span if span > 0 else np.zeros_like(tile)
      axes[row, j + 1].imshow(tile, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return plotting.save_figure(fig, path)

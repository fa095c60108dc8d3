"""What a trained model looks at, as numbers: Grad-CAM heat maps and feature maps.

Grad-CAM (Selvaraju et al. 2017): where in the photo a model's class evidence comes from.

For a convolutional feature map A (N, h, w, C), by default the last one, and a class score y_c:
  weights_k = mean over (i, j) of dy_c / dA_ijk   (how much channel k matters for class c),
  map_ij    = ReLU(sum_k weights_k A_ijk),
normalised to [0, 1] and upsampled to the photo. Every carjax model exposes `features` (the
last map) and `classify` (map -> logits), so by default the gradient is taken w.r.t. A
directly; an earlier layer, whose finer map shows more detail (the custom CNN's last map is
2×2 at 128 px), is reached by intercepting that submodule's output.

Feature maps: both architectures `sow` their intermediate activations into the
'intermediates' collection (the custom CNN after every convolution and pooling, as
`stageK/after_convJ` and `stageK/after_pool`; EfficientNet after its stem, each stage and the
head convolution), so one `apply(..., mutable=['intermediates'])` yields every map without
touching the models.

The figures built from these numbers are the study's (`carjax.study.gradcam_figures`,
`carjax.study.model_figures`); the overlay colouring is `carjax.plotting.overlay_heatmap`.
"""

from __future__ import annotations

import os
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


# ----------------------------------------------------------------------------- Grad-CAM


def gradcam(model, variables, images, target_classes=None, layer: str | None = None):
  """(heat maps [N, h, w] in [0, 1], logits [N, K]) for normalised float `images`.

  `target_classes` [N]: the class whose evidence is mapped; None maps the predicted class.
  `layer`: '/'-joined path of the submodule whose output is the map A (e.g. 'stage4' of the
  custom CNN, 'blocks_12' of an EfficientNet); None takes the map `model.features` returns.
  A shallower layer trades class specificity for a finer map.
  """
  if layer is None:
    features = model.apply(variables, images, train=False, method=model.features)
    logits_of = lambda feats: model.apply(variables, feats, train=False, method=model.classify)
  else:
    features, logits_of = _split_at_layer(model, variables, images, layer)

  logits = logits_of(features)
  if target_classes is None:
    target_classes = jnp.argmax(logits, axis=-1)
  target_classes = jnp.asarray(target_classes)
  # Images do not interact in eval mode, so the gradient of the summed target scores gives
  # each image's own gradient in one backward pass.
  score = lambda f: jnp.sum(jnp.take_along_axis(logits_of(f), target_classes[:, None], axis=1))
  grads = jax.grad(score)(features).astype(jnp.float32)
  weights = jnp.mean(grads, axis=(1, 2))  # [N, C]
  cams = jax.nn.relu(jnp.einsum("nhwc,nc->nhw", features.astype(jnp.float32), weights))
  peak = jnp.max(cams, axis=(1, 2), keepdims=True)
  cams = jnp.where(peak > 0, cams / jnp.where(peak > 0, peak, 1.0), 0.0)
  return cams, logits


def _split_at_layer(model, variables, images, layer: str):
  """(A = output of submodule `layer`, A -> logits) for a model that only has `__call__`.

  A method interceptor swaps the layer's output for a given array, so the rest of the
  network becomes a function of A without the model exposing that split itself.
  """
  path = tuple(layer.split("/"))

  def run(replacement):
    seen = []

    def interceptor(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.method_name == "__call__" and tuple(context.module.path) == path:
        seen.append(out)
        if replacement is not None:
          return replacement
      return out

    with nn.intercept_methods(interceptor):
      logits = model.apply(variables, images, train=False)
    if len(seen) != 1:
      raise ValueError(f"Grad-CAM layer {layer!r}: the model called it {len(seen)} times "
                       "(want exactly once); name a submodule of the model, e.g. 'stage4' "
                       "or 'blocks_12'.")
    return logits, seen[0]

  _, features = run(None)
  return features, lambda feats: run(feats)[0]


def upsample(heatmap: np.ndarray, size) -> np.ndarray:
  """A [h, w] map bilinearly resized to `size`, S or (height, width): the photo's size."""
  out = (size, size) if isinstance(size, int) else tuple(size)
  return np.asarray(jax.image.resize(jnp.asarray(heatmap, jnp.float32), out,
                                     method="linear"))


def predictor_gradcam(predictor, images_uint8: np.ndarray, target_classes=None,
                      layer: str | None = None):
  """(heat maps upsampled to the input size [N, S, S], probabilities [N, K]) for a predictor."""
  x = predictor.input_spec.normalize(images_uint8)
  targets = None if target_classes is None else jnp.asarray(target_classes, jnp.int32)
  run = jax.jit(lambda v, x, t: gradcam(predictor.model, v, x, t, layer))
  cams, logits = jax.device_get(run(predictor.variables, x, targets))
  size = images_uint8.shape[1:3]
  heatmaps = np.zeros((len(cams),) + size, np.float32)
  for i, cam in enumerate(cams):
    heatmaps[i] = upsample(cam, size)
  return heatmaps, np.asarray(jax.nn.softmax(logits, axis=-1))


def default_layer(model_config) -> str | None:
  """The map Grad-CAM reads by default: the custom CNN's last stage (its `features` map is
  too coarse to show anything at its input size), the last map of every other model."""
  if model_config.get("name") == "custom_cnn":
    return f"stage{len(model_config.stage_widths)}"
  return None


class PredictorGradCam:
  """Grad-CAM of a `Predictor`'s predicted class, compiled once and reused for every call.

  Batches are padded to `batch_size`, so one compiled program serves any number of photos.
  """

  def __init__(self, predictor, layer: str | None = None, batch_size: int = 8):
    self.predictor, self.batch_size = predictor, batch_size
    self.layer = default_layer(predictor.config.model) if layer is None else (layer or None)
    model = predictor.model
    self._run = jax.jit(lambda v, x: gradcam(model, v, x, None, self.layer))

  def __call__(self, images_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(heat maps [N, S, S] in [0, 1] at the input size, probabilities [N, K])."""
    size = images_uint8.shape[1:3]
    heatmaps, probs = [], []
    for start in range(0, len(images_uint8), self.batch_size):
      chunk = images_uint8[start:start + self.batch_size]
      pad = self.batch_size - len(chunk)
      padded = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
      x = self.predictor.input_spec.normalize(padded)
      cams, logits = jax.device_get(self._run(self.predictor.variables, x))
      heatmaps.extend(upsample(cam, size) for cam in cams[:len(chunk)])
      probs.append(np.asarray(jax.nn.softmax(logits[:len(chunk)], axis=-1)))
    if not heatmaps:
      return np.zeros((0,) + size, np.float32), np.zeros((0, 0), np.float32)
    return np.stack(heatmaps), np.concatenate(probs)


def write_overlays(predictor, paths: Sequence[str], output_dir: str,
                   layer: str | None = None) -> list[str]:
  """Writes `<output_dir>/<file stem>_gradcam.png` (the model's input with the predicted
  make's Grad-CAM over it) for each readable image file; returns the paths written."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from carjax import plotting  # pylint: disable=g-import-not-at-top  # matplotlib: only here.

  from carjax.data import decode  # pylint: disable=g-import-not-at-top
  os.makedirs(output_dir, exist_ok=True)
  images, kept = [], []
  for path in paths:
    try:
      images.append(predictor.load_image(path, name=path))
      kept.append(path)
    except decode.UnreadableImageError:
      continue  # Reported with the predictions.
  if not images:
    return []
  heatmaps, _ = PredictorGradCam(predictor, layer)(np.stack(images))
  written, used = [], set()
  for path, image, heatmap in zip(kept, images, heatmaps, strict=True):
    stem = os.path.splitext(os.path.basename(path))[0]
    name, n = f"{stem}_gradcam.png", 1
    while name in used:  # Same file name in two folders.
      n += 1
      name = f"{stem}_{n}_gradcam.png"
    used.add(name)
    out = os.path.join(output_dir, name)
    Image.fromarray(plotting.overlay_heatmap(image, heatmap)).save(out)
    written.append(out)
  return written


# ------------------------------------------------------------------------- feature maps


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

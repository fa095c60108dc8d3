"""Explicit name maps from EfficientNet weight sources to carjax's tree.

carjax layer (see `carjax.models.efficientnet`) -> source layer, per scheme:

========================  ==================  =======================  ===========================  ==========================
carjax                    lukemelas / Lite    timm                     torchvision                  Keras
========================  ==================  =======================  ===========================  ==========================
stem_conv, stem_bn        _conv_stem, _bn0    conv_stem, bn1           features.0.0, features.0.1   stem_conv, stem_bn
blocks_i/expand_conv      _blocks.i.          blocks.s.r.conv_pw       features.s+1.r.block.0.0     blockSL_expand_conv
blocks_i/expand_bn          _expand_conv, _bn0     bn1                    block.0.1                    blockSL_expand_bn
blocks_i/depthwise_conv   _depthwise_conv     conv_dw                  block.k.0 (k = 0 or 1)       blockSL_dwconv
blocks_i/depthwise_bn     _bn1                bn2 (bn1 when e=1)       block.k.1                    blockSL_bn
blocks_i/se_reduce        _se_reduce          se.conv_reduce           block.k+1.fc1                blockSL_se_reduce
blocks_i/se_expand        _se_expand          se.conv_expand           block.k+1.fc2                blockSL_se_expand
blocks_i/project_conv     _project_conv       conv_pwl (conv_pw, e=1)  block.k+2.0                  blockSL_project_conv
blocks_i/project_bn       _bn2                bn3 (bn2 when e=1)       block.k+2.1                  blockSL_project_bn
top_conv, top_bn          _conv_head, _bn1    conv_head, bn2           features.8.0, features.8.1   top_conv, top_bn
head                      _fc                 classifier               classifier.1                 predictions
========================  ==================  =======================  ===========================  ==========================

(i: flat block index; s, r: stage and repeat, from 0; Keras' S counts stages
from 1 and L is the repeat as a letter; e: expand ratio.)

Keras 3 ``.weights.h5`` files do not store layer names: their layers are keyed
by class, numbered in the model's layer order ("conv2d_12",
"batch_normalization_7", ...); `keras_class_keys` reproduces that numbering.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from carjax.convert import mapping
from carjax.models.efficientnet import EfficientNet

# What each carjax layer is; decides which tensors it has and their layouts.
CONV, CONV_BIAS, DEPTHWISE, NORM, DENSE = (
    'conv', 'conv_bias', 'depthwise', 'norm', 'dense')


@dataclasses.dataclass(frozen=True)
class Layer:
  kind: str
  path: tuple[str, ...]  # inside 'params' / 'batch_stats'
  part: str  # 'stem_conv', 'expand_bn', 'head', ... (the last path element)
  stage: int = -1  # blocks only, from 0
  repeat: int = -1
  block: int = -1  # flat block index
  expands: bool = False  # the block has an expand conv


def model_layers(model: EfficientNet) -> Iterator[Layer]:
  """carjax's weighted layers in forward order (Keras creation order too)."""
  yield Layer(CONV, ('stem_conv',), 'stem_conv')
  yield Layer(NORM, ('stem_bn',), 'stem_bn')
  block = 0
  for stage, blocks in enumerate(model.block_layout()):
    for repeat, spec in enumerate(blocks):
      expands = spec['expand_ratio'] != 1
      parts = []
      if expands:
        parts += [(CONV, 'expand_conv'), (NORM, 'expand_bn')]
      parts += [(DEPTHWISE, 'depthwise_conv'), (NORM, 'depthwise_bn')]
      if spec['se_channels']:
        parts += [(CONV_BIAS, 'se_reduce'), (CONV_BIAS, 'se_expand')]
      parts += [(CONV, 'project_conv'), (NORM, 'project_bn')]
      for kind, part in parts:
        yield Layer(kind, (f'blocks_{block}', part), part, stage, repeat,
                    block, expands)
      block += 1
  yield Layer(CONV, ('top_conv',), 'top_conv')
  yield Layer(NORM, ('top_bn',), 'top_bn')
  yield Layer(DENSE, ('head',), 'head')


# ---------------------------------------------------------------------------
# Source layer names.

_LUKEMELAS_PARTS = {
    'stem_conv': '_conv_stem', 'stem_bn': '_bn0',
    'expand_conv': '_expand_conv', 'expand_bn': '_bn0',
    'depthwise_conv': '_depthwise_conv', 'depthwise_bn': '_bn1',
    'se_reduce': '_se_reduce', 'se_expand': '_se_expand',
    'project_conv': '_project_conv', 'project_bn': '_bn2',
    'top_conv': '_conv_head', 'top_bn': '_bn1', 'head': '_fc',
}


def lukemelas_name(layer: Layer) -> str:
  """EfficientNet-Lite PyTorch reference (and efficientnet_pytorch) names."""
  name = _LUKEMELAS_PARTS[layer.part]
  return f'_blocks.{layer.block}.{name}' if layer.block >= 0 else name


_TIMM_TOP = {'stem_conv': 'conv_stem', 'stem_bn': 'bn1', 'top_conv': 'conv_head',
             'top_bn': 'bn2', 'head': 'classifier'}
# timm's first stage is a DepthwiseSeparableConv (no expand conv), the others
# InvertedResidual; their sub-module names differ.
_TIMM_SEPARABLE = {'depthwise_conv': 'conv_dw', 'depthwise_bn': 'bn1',
                   'se_reduce': 'se.conv_reduce', 'se_expand': 'se.conv_expand',
                   'project_conv': 'conv_pw', 'project_bn': 'bn2'}
_TIMM_INVERTED = {'expand_conv': 'conv_pw', 'expand_bn': 'bn1',
                  'depthwise_conv': 'conv_dw', 'depthwise_bn': 'bn2',
                  'se_reduce': 'se.conv_reduce', 'se_expand': 'se.conv_expand',
                  'project_conv': 'conv_pwl', 'project_bn': 'bn3'}


def timm_name(layer: Layer) -> str:
  if layer.block < 0:
    return _TIMM_TOP[layer.part]
  parts = _TIMM_INVERTED if layer.expands else _TIMM_SEPARABLE
  return f'blocks.{layer.stage}.{layer.repeat}.{parts[layer.part]}'


def torchvision_name(layer: Layer, num_stages: int = 7) -> str:
  """torchvision: features.0 stem, features.1..7 stages, features.8 head conv.

  A block is ``block`` = Sequential([expand CNA]?, depthwise CNA, SE, project
  CN), CNA = Sequential(conv, norm, act).
  """
  top = {'stem_conv': 'features.0.0', 'stem_bn': 'features.0.1',
         'top_conv': f'features.{num_stages + 1}.0',
         'top_bn': f'features.{num_stages + 1}.1', 'head': 'classifier.1'}
  if layer.block < 0:
    return top[layer.part]
  first = 1 if layer.expands else 0  # index of the depthwise CNA
  within = {'expand_conv': '0.0', 'expand_bn': '0.1',
            'depthwise_conv': f'{first}.0', 'depthwise_bn': f'{first}.1',
            'se_reduce': f'{first + 1}.fc1', 'se_expand': f'{first + 1}.fc2',
            'project_conv': f'{first + 2}.0', 'project_bn': f'{first + 2}.1'}
  return f'features.{layer.stage + 1}.{layer.repeat}.block.{within[layer.part]}'


_KERAS_TOP = {'stem_conv': 'stem_conv', 'stem_bn': 'stem_bn',
              'top_conv': 'top_conv', 'top_bn': 'top_bn', 'head': 'predictions'}
_KERAS_BLOCK = {'expand_conv': 'expand_conv', 'expand_bn': 'expand_bn',
                'depthwise_conv': 'dwconv', 'depthwise_bn': 'bn',
                'se_reduce': 'se_reduce', 'se_expand': 'se_expand',
                'project_conv': 'project_conv', 'project_bn': 'project_bn'}


def keras_name(layer: Layer) -> str:
  """Keras applications layer names (legacy .h5 files key layers by them)."""
  if layer.block < 0:
    return _KERAS_TOP[layer.part]
  letter = chr(ord('a') + layer.repeat)
  return f'block{layer.stage + 1}{letter}_{_KERAS_BLOCK[layer.part]}'


_KERAS_CLASSES = {CONV: 'conv2d', CONV_BIAS: 'conv2d', DEPTHWISE: 'depthwise_conv2d',
                  NORM: 'batch_normalization', DENSE: 'dense'}


def keras_class_keys(model: EfficientNet) -> dict[tuple[str, ...], str]:
  """carjax layer path -> Keras 3 ``.weights.h5`` key ('conv2d_12', ...).

  Keras 3 numbers layers per class in the model's layer order, which for
  keras.applications.EfficientNet is `model_layers`' order.
  """
  counts: dict[str, int] = {}
  keys = {}
  for layer in model_layers(model):
    cls = _KERAS_CLASSES[layer.kind]
    index = counts.get(cls, 0)
    counts[cls] = index + 1
    keys[layer.path] = cls if index == 0 else f'{cls}_{index}'
  return keys


# ---------------------------------------------------------------------------
# Plans: one Assignment per target leaf.

def _param(layer: Layer, leaf: str) -> tuple[str, ...]:
  return ('params', *layer.path, leaf)


def _stat(layer: Layer, leaf: str) -> tuple[str, ...]:
  return ('batch_stats', *layer.path, leaf)


def torch_plan(model: EfficientNet, scheme: str) -> list[mapping.Assignment]:
  """Plan for a PyTorch state dict in scheme 'lukemelas', 'timm' or 'torchvision'."""
  namer = {'lukemelas': lukemelas_name, 'timm': timm_name,
           'torchvision': lambda layer: torchvision_name(layer, len(model.stages))}[scheme]
  A = mapping.Assignment  # pylint: disable=invalid-name
  conv = dict(layout=mapping.torch_conv, layout_name='OIHW->HWIO')
  plan = []
  for layer in model_layers(model):
    name = namer(layer)
    if layer.kind in (CONV, DEPTHWISE, CONV_BIAS):
      plan.append(A(f'{name}.weight', _param(layer, 'kernel'), **conv))
      if layer.kind == CONV_BIAS:
        plan.append(A(f'{name}.bias', _param(layer, 'bias')))
    elif layer.kind == NORM:
      plan += [A(f'{name}.weight', _param(layer, 'scale')),
               A(f'{name}.bias', _param(layer, 'bias')),
               A(f'{name}.running_mean', _stat(layer, 'mean')),
               A(f'{name}.running_var', _stat(layer, 'var'))]
    elif layer.kind == DENSE:
      plan += [A(f'{name}.weight', _param(layer, 'kernel'), mapping.torch_linear,
                 '(out,in)->(in,out)'),
               A(f'{name}.bias', _param(layer, 'bias'))]
  return plan


def torch_ignored(name: str) -> bool:
  """PyTorch BatchNorm's step counter has no carjax counterpart."""
  return name.endswith('.num_batches_tracked')


def keras_plan(model: EfficientNet, layer_keys: dict[tuple[str, ...], str]
               ) -> list[mapping.Assignment]:
  """Plan for Keras weights keyed '<layer key>/<variable index>'.

  Variable order per layer (Keras): Conv2D [kernel, bias?], DepthwiseConv2D
  [kernel], BatchNormalization [gamma, beta, moving_mean, moving_variance],
  Dense [kernel, bias].
  """
  A = mapping.Assignment  # pylint: disable=invalid-name
  plan = []
  for layer in model_layers(model):
    key = layer_keys[layer.path]
    if layer.kind in (CONV, CONV_BIAS):
      plan.append(A(f'{key}/0', _param(layer, 'kernel')))
      if layer.kind == CONV_BIAS:
        plan.append(A(f'{key}/1', _param(layer, 'bias')))
    elif layer.kind == DEPTHWISE:
      plan.append(A(f'{key}/0', _param(layer, 'kernel'), mapping.keras_depthwise,
                    '(kh,kw,C,1)->(kh,kw,1,C)'))
    elif layer.kind == NORM:
      plan += [A(f'{key}/0', _param(layer, 'scale')),
               A(f'{key}/1', _param(layer, 'bias')),
               A(f'{key}/2', _stat(layer, 'mean')),
               A(f'{key}/3', _stat(layer, 'var'))]
    elif layer.kind == DENSE:
      plan += [A(f'{key}/0', _param(layer, 'kernel')),
               A(f'{key}/1', _param(layer, 'bias'))]
  return plan

"""EfficientNet (B0-B7) and EfficientNet-Lite (Lite0-Lite4) in Flax Linen.

One implementation built from the B0 block table and scaled by width/depth
multipliers (Tan & Le, 2019). The Lite family is the same network with
switches flipped: no squeeze-excitation, ReLU6, the stem (32) and head (1280)
widths not scaled, and the first and last stages' repeats not scaled.

The conventions that differ between weight sources are attributes rather than
copies of the code:

* ``padding``: 'tf_same' (TensorFlow/Keras 'SAME': on stride-2 layers the extra
  pixel goes bottom/right) or 'symmetric' (PyTorch ``padding=(k - 1) // 2``).
* ``bn_epsilon`` / ``bn_momentum`` (flax convention: running = momentum *
  running + (1 - momentum) * batch; PyTorch's momentum m is flax's 1 - m).
* ``activation``: 'swish' or 'relu6'; ``se``: squeeze-excitation on/off.

Inputs are NHWC, float, already normalised (the mean/std that a weight source
expects are recorded by `carjax.convert`, not folded into the model).

Parameter tree (names used by the converters in `carjax.convert`)::

  stem_conv, stem_bn,
  blocks_0 ... blocks_{N-1}:  expand_conv, expand_bn (absent when expand 1),
                              depthwise_conv, depthwise_bn,
                              se_reduce, se_expand (absent without SE),
                              project_conv, project_bn
  top_conv, top_bn (the 1x1 head conv), head (the classifier Dense),
  aux_head (a second classifier Dense, only with aux_classes > 0)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from carjax.models.depthwise import DepthwiseConv2D, Implementation

Array = jax.Array
Dtype = Any

# Keras/TF initialisers of the reference implementation: He-normal over the
# output fan for convolutions, a narrow uniform for the classifier.
_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'truncated_normal')
_dense_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_out', 'uniform')

_ACTIVATIONS = {'swish': nn.swish, 'relu6': nn.relu6}


@dataclasses.dataclass(frozen=True)
class StageSpec:
  """One row of the EfficientNet block table (before scaling)."""
  repeats: int
  kernel_size: int
  strides: int
  expand_ratio: int
  channels: int  # output channels of every block in the stage


# EfficientNet-B0 (Tan & Le 2019, table 1); stages 1..7.
B0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(repeats=1, kernel_size=3, strides=1, expand_ratio=1, channels=16),
    StageSpec(repeats=2, kernel_size=3, strides=2, expand_ratio=6, channels=24),
    StageSpec(repeats=2, kernel_size=5, strides=2, expand_ratio=6, channels=40),
    StageSpec(repeats=3, kernel_size=3, strides=2, expand_ratio=6, channels=80),
    StageSpec(repeats=3, kernel_size=5, strides=1, expand_ratio=6, channels=112),
    StageSpec(repeats=4, kernel_size=5, strides=2, expand_ratio=6, channels=192),
    StageSpec(repeats=1, kernel_size=3, strides=1, expand_ratio=6, channels=320),
)


@dataclasses.dataclass(frozen=True)
class VariantSpec:
  width: float
  depth: float
  resolution: int
  dropout_rate: float
  lite: bool = False


VARIANTS: dict[str, VariantSpec] = {
    'b0': VariantSpec(1.0, 1.0, 224, 0.2),
    'b1': VariantSpec(1.0, 1.1, 240, 0.2),
    'b2': VariantSpec(1.1, 1.2, 260, 0.3),
    'b3': VariantSpec(1.2, 1.4, 300, 0.3),
    'b4': VariantSpec(1.4, 1.8, 380, 0.4),
    'b5': VariantSpec(1.6, 2.2, 456, 0.4),
    'b6': VariantSpec(1.8, 2.6, 528, 0.5),
    'b7': VariantSpec(2.0, 3.1, 600, 0.5),
    'lite0': VariantSpec(1.0, 1.0, 224, 0.2, lite=True),
    'lite1': VariantSpec(1.0, 1.1, 240, 0.2, lite=True),
    'lite2': VariantSpec(1.1, 1.2, 260, 0.3, lite=True),
    'lite3': VariantSpec(1.2, 1.4, 280, 0.3, lite=True),
    'lite4': VariantSpec(1.4, 1.8, 300, 0.3, lite=True),
}

# Conventions of the weight sources the converters read. 'tf' is TensorFlow's
# reference, Keras applications and the EfficientNet-Lite release.
CONVENTIONS: dict[str, dict[str, Any]] = {
    'tf': dict(padding='tf_same', bn_epsilon=1e-3, bn_momentum=0.99),
    'timm': dict(padding='symmetric', bn_epsilon=1e-5, bn_momentum=0.9),
    # torchvision B0-B4 use PyTorch's default BatchNorm; its B5-B7 weights are
    # ports of TF's and use eps 1e-3, momentum 0.01 (flax 0.99).
    'torchvision': dict(padding='symmetric', bn_epsilon=1e-5, bn_momentum=0.9),
    'torchvision_b5_b7': dict(padding='symmetric', bn_epsilon=1e-3,
                              bn_momentum=0.99),
}


def round_channels(channels: int, multiplier: float, divisor: int = 8) -> int:
  """Scales a width and rounds it to a multiple of `divisor` (TF reference).

  Never rounds down by more than 10%.
  """
  if multiplier == 1.0:
    return channels
  scaled = channels * multiplier
  rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * scaled:
    rounded += divisor
  return int(rounded)


def round_repeats(repeats: int, multiplier: float) -> int:
  return int(math.ceil(multiplier * repeats))


def _conv_padding(padding: str, kernel_size: int):
  """nn.Conv padding argument for one of our padding modes."""
  if padding == 'tf_same':
    return 'SAME'  # lax 'SAME' is TensorFlow's: extra pixel after.
  if padding == 'symmetric':
    return (((kernel_size - 1) // 2,) * 2,) * 2
  raise ValueError(f"padding must be 'tf_same' or 'symmetric', got {padding!r}")


class MBConvBlock(nn.Module):
  """Mobile inverted bottleneck: expand 1x1 -> depthwise -> SE -> project 1x1.

  A residual connection (with stochastic depth) is used when the block keeps
  both the resolution and the channel count.
  """
  out_channels: int
  kernel_size: int
  strides: int
  expand_ratio: int
  se_channels: int  # 0: no squeeze-excitation
  activation: str
  padding: str
  bn_epsilon: float
  bn_momentum: float
  drop_path_rate: float
  depthwise_implementation: Implementation = 'auto'
  freeze_batchnorm: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: Array, *, train: bool) -> Array:
    act = _ACTIVATIONS[self.activation]
    conv = lambda features, name, **kw: nn.Conv(
        features, (1, 1), padding='VALID', kernel_init=_conv_init,
        dtype=self.dtype, param_dtype=self.param_dtype, name=name, **kw)
    norm = lambda name: nn.BatchNorm(
        use_running_average=not train or self.freeze_batchnorm, momentum=self.bn_momentum,
        epsilon=self.bn_epsilon, dtype=self.dtype,
        param_dtype=self.param_dtype, name=name)

    in_channels = inputs.shape[-1]
    x = inputs
    if self.expand_ratio != 1:
      x = conv(in_channels * self.expand_ratio, 'expand_conv', use_bias=False)(x)
      x = act(norm('expand_bn')(x))

    x = DepthwiseConv2D(
        self.kernel_size, strides=self.strides, padding=self.padding,
        implementation=self.depthwise_implementation, dtype=self.dtype,
        param_dtype=self.param_dtype, name='depthwise_conv')(x)
    x = act(norm('depthwise_bn')(x))

    if self.se_channels:
      squeezed = jnp.mean(x, axis=(1, 2), keepdims=True)
      squeezed = act(conv(self.se_channels, 'se_reduce')(squeezed))
      x = x * nn.sigmoid(conv(x.shape[-1], 'se_expand')(squeezed))

    x = conv(self.out_channels, 'project_conv', use_bias=False)(x)
    x = norm('project_bn')(x)

    if self.strides == 1 and in_channels == self.out_channels:
      # Stochastic depth: drop the whole residual branch per example.
      x = nn.Dropout(self.drop_path_rate, broadcast_dims=(1, 2, 3))(
          x, deterministic=not train)
      x = x + inputs
    return x


class EfficientNet(nn.Module):
  """EfficientNet / EfficientNet-Lite image classifier (NHWC logits).

  Use `efficientnet(variant, num_classes)` for the published variants.

  Attributes:
    num_classes: classifier outputs.
    width: channel multiplier.
    depth: repeats multiplier.
    stages: the unscaled block table.
    stem_channels, head_channels: unscaled stem and head widths.
    fix_stem_head: Lite scaling: stem and head widths and the first and last
      stages' repeats are not scaled.
    se: use squeeze-excitation; se_ratio: its width relative to the block's
      input channels.
    activation: 'swish' | 'relu6'.
    padding: 'tf_same' | 'symmetric'.
    bn_epsilon, bn_momentum: BatchNorm settings (flax momentum convention).
    drop_connect_rate: stochastic-depth rate of the last block; block i of n
      drops with rate * i / n (Keras/TF schedule).
    dropout_rate: dropout before the classifier.
    aux_classes: > 0 adds a second classifier, `aux_head`, on the same pooled, dropped-out
      features as `head` (an auxiliary label, `config.data.aux_labels_csv`); only
      `return_aux=True` calls it, so inference and export see `head` alone.
    resolution: the variant's native input size (informational).
    depthwise_implementation: 'auto' | 'shifted' | 'grouped'.
    dtype: computation dtype; param_dtype: parameter dtype. Logits are float32.
  """
  num_classes: int = 1000
  width: float = 1.0
  depth: float = 1.0
  stages: Sequence[StageSpec] = B0_STAGES
  stem_channels: int = 32
  head_channels: int = 1280
  fix_stem_head: bool = False
  se: bool = True
  se_ratio: float = 0.25
  activation: Literal['swish', 'relu6'] = 'swish'
  padding: Literal['tf_same', 'symmetric'] = 'tf_same'
  bn_epsilon: float = 1e-3
  bn_momentum: float = 0.99
  drop_connect_rate: float = 0.2
  dropout_rate: float = 0.2
  aux_classes: int = 0
  resolution: int = 224
  depthwise_implementation: Implementation = 'auto'
  # True: BatchNorm normalises with its running statistics in training too and never
  # updates them (fine-tuning with small batches).
  freeze_batchnorm: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def block_layout(self) -> list[list[dict[str, Any]]]:
    """Per stage, the keyword arguments of each of its blocks (after scaling)."""
    scale_fixed = lambda channels: (channels if self.fix_stem_head else
                                    round_channels(channels, self.width))
    in_channels = scale_fixed(self.stem_channels)
    stage_repeats = []
    for index, stage in enumerate(self.stages):
      fixed = self.fix_stem_head and index in (0, len(self.stages) - 1)
      stage_repeats.append(stage.repeats if fixed else
                           round_repeats(stage.repeats, self.depth))
    total_blocks = sum(stage_repeats)

    layout, block_index = [], 0
    for stage, repeats in zip(self.stages, stage_repeats):
      out_channels = round_channels(stage.channels, self.width)
      blocks = []
      for repeat in range(repeats):
        se_channels = (max(1, int(in_channels * self.se_ratio))
                       if self.se else 0)
        blocks.append(dict(
            out_channels=out_channels,
            kernel_size=stage.kernel_size,
            strides=stage.strides if repeat == 0 else 1,
            expand_ratio=stage.expand_ratio,
            se_channels=se_channels,
            drop_path_rate=self.drop_connect_rate * block_index / total_blocks))
        in_channels = out_channels
        block_index += 1
      layout.append(blocks)
    return layout

  def setup(self):
    conv_kw = dict(use_bias=False, kernel_init=_conv_init, dtype=self.dtype,
                   param_dtype=self.param_dtype)
    bn_kw = dict(momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                 dtype=self.dtype, param_dtype=self.param_dtype)
    fixed = lambda channels: (channels if self.fix_stem_head else
                              round_channels(channels, self.width))

    self.stem_conv = nn.Conv(fixed(self.stem_channels), (3, 3), strides=2,
                             padding=_conv_padding(self.padding, 3), **conv_kw)
    self.stem_bn = nn.BatchNorm(**bn_kw)

    layout = self.block_layout()
    # Index of the last block of every stage, for the 'stageN' intermediates.
    self._stage_ends = tuple(
        sum(len(stage) for stage in layout[:i + 1]) - 1
        for i in range(len(layout)))
    self.blocks = [
        MBConvBlock(activation=self.activation, padding=self.padding,
                    bn_epsilon=self.bn_epsilon, bn_momentum=self.bn_momentum,
                    depthwise_implementation=self.depthwise_implementation,
                    freeze_batchnorm=self.freeze_batchnorm,
                    dtype=self.dtype, param_dtype=self.param_dtype, **kwargs)
        for stage in layout for kwargs in stage
    ]

    self.top_conv = nn.Conv(fixed(self.head_channels), (1, 1),
                             padding='VALID', **conv_kw)
    self.top_bn = nn.BatchNorm(**bn_kw)
    self.dropout = nn.Dropout(self.dropout_rate)
    self.head = nn.Dense(self.num_classes, kernel_init=_dense_init,
                         dtype=self.dtype, param_dtype=self.param_dtype)
    if self.aux_classes:
      self.aux_head = nn.Dense(self.aux_classes, kernel_init=_dense_init,
                               dtype=self.dtype, param_dtype=self.param_dtype)

  def features(self, x: Array, *, train: bool) -> Array:
    """Image -> final feature map (after the 1x1 head conv), before pooling.

    Sows intermediates 'stem', 'stage1'..'stage7' and 'head_conv'.
    """
    act = _ACTIVATIONS[self.activation]
    frozen_bn = not train or self.freeze_batchnorm
    x = act(self.stem_bn(self.stem_conv(x), use_running_average=frozen_bn))
    self.sow('intermediates', 'stem', x)
    stage = 0
    for index, block in enumerate(self.blocks):
      x = block(x, train=train)
      if index == self._stage_ends[stage]:
        stage += 1
        self.sow('intermediates', f'stage{stage}', x)
    x = act(self.top_bn(self.top_conv(x), use_running_average=frozen_bn))
    self.sow('intermediates', 'head_conv', x)
    return x

  def classify(self, features: Array, *, train: bool, return_aux: bool = False):
    """Feature map -> logits: global average pool, dropout, Dense; with `return_aux`,
    (logits, auxiliary logits) from the same dropped-out features."""
    x = jnp.mean(features, axis=(1, 2))
    x = self.dropout(x, deterministic=not train)
    logits = jnp.asarray(self.head(x), jnp.float32)
    if not return_aux:
      return logits
    if not self.aux_classes:
      raise ValueError('return_aux=True needs a model built with aux_classes > 0')
    return logits, jnp.asarray(self.aux_head(x), jnp.float32)

  def __call__(self, x: Array, *, train: bool, return_aux: bool = False):
    return self.classify(self.features(x, train=train), train=train,
                         return_aux=return_aux)


def variant_defaults(variant: str, *, convention: str = 'tf') -> dict[str, Any]:
  """Keyword arguments of `EfficientNet` for a published variant.

  Args:
    variant: 'b0'..'b7' or 'lite0'..'lite4'.
    convention: which weight source's conventions to use for padding and
      BatchNorm: 'tf' (TensorFlow, Keras, EfficientNet-Lite), 'timm' or
      'torchvision' (whose B5-B7 keep TF's BatchNorm settings).
  """
  if variant not in VARIANTS:
    raise ValueError(f'unknown EfficientNet variant {variant!r}; '
                     f'expected one of {sorted(VARIANTS)}')
  if convention not in ('tf', 'timm', 'torchvision'):
    raise ValueError(f"convention must be 'tf', 'timm' or 'torchvision', "
                     f'got {convention!r}')
  spec = VARIANTS[variant]
  if convention == 'torchvision' and variant in ('b5', 'b6', 'b7'):
    convention = 'torchvision_b5_b7'
  kwargs = dict(width=spec.width, depth=spec.depth, resolution=spec.resolution,
                dropout_rate=spec.dropout_rate, **CONVENTIONS[convention])
  if spec.lite:
    kwargs.update(fix_stem_head=True, se=False, activation='relu6')
  return kwargs


def efficientnet(variant: str, num_classes: int, *, convention: str = 'tf',
                 **overrides) -> EfficientNet:
  """Builds a published EfficientNet variant.

  Args:
    variant: 'b0'..'b7' or 'lite0'..'lite4'.
    num_classes: classifier outputs.
    convention: padding/BatchNorm conventions ('tf', 'timm', 'torchvision');
      see `variant_defaults`.
    **overrides: any `EfficientNet` attribute, e.g. ``dtype=jnp.bfloat16``,
      ``drop_connect_rate=0.0``, ``padding='symmetric'``.
  """
  kwargs = variant_defaults(variant, convention=convention)
  kwargs.update(overrides)
  return EfficientNet(num_classes=num_classes, **kwargs)

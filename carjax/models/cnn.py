"""The study's own architecture: convolution + non-linearity + pooling, then dense layers.

Each stage is `convs_per_stage` × (3×3 conv → BatchNorm → ReLU) followed by a 2×2 pooling;
the feature map is then flattened (or globally averaged) and passed through fully connected
layers `Y = W X + b` to one logit per make. The forward and backward passes of every layer
used here are written out in `docs/mathematics.md` and checked against `jax.grad` in
`tests/test_mathematics.py`.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


def max_pool_2x2(x):
  """2×2 max pooling with stride 2 (VALID), as `nn.max_pool(x, (2, 2), strides=(2, 2))`.

  Written as a reshape and a max because XLA:CPU's backward of `reduce_window` (a
  select-and-scatter) is about 3× slower than the backward of a plain reduction; the
  forward is identical. Where the four values of a window tie, `jnp.max` shares the
  gradient between them and select-and-scatter gives it to one: after a ReLU such ties are
  zeros, whose gradient the ReLU drops anyway.
  """
  n, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2, :]
  return jnp.max(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


class ConvStage(nn.Module):
  """`num_convs` convolutions (each optionally batch-normalised) then one pooling."""

  features: int
  num_convs: int
  kernel_size: int = 3
  first_stride: int = 1
  pooling: str = "max"
  use_batchnorm: bool = True
  freeze_batchnorm: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    for i in range(self.num_convs):
      stride = self.first_stride if i == 0 else 1
      x = nn.Conv(
          self.features, (self.kernel_size, self.kernel_size), strides=stride,
          padding="SAME",
          # A bias before BatchNorm is cancelled by its mean subtraction.
          use_bias=not self.use_batchnorm,
          dtype=self.dtype, param_dtype=self.param_dtype, name=f"conv{i}")(x)
      if self.use_batchnorm:
        x = nn.BatchNorm(use_running_average=not train or self.freeze_batchnorm, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, param_dtype=self.param_dtype, name=f"bn{i}")(x)
      x = nn.relu(x)
      self.sow("intermediates", f"after_conv{i}", x)
    if self.pooling == "max":
      x = max_pool_2x2(x)
    elif self.pooling == "avg":
      x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    elif self.pooling != "none":
      raise ValueError(f"config.model.pooling must be 'max', 'avg' or 'none', got {self.pooling!r}")
    self.sow("intermediates", "after_pool", x)
    return x


class CustomCNN(nn.Module):
  """A plain convolutional network for image classification.

  Attributes:
    num_classes: number of outputs of the final dense layer (`head`).
    stage_widths: output channels of each stage; the spatial size halves per stage.
    convs_per_stage: convolutions in each stage before its pooling.
    stem_stride: stride of the very first convolution (2 quarters the compute of stage 1).
    pooling: 'max' or 'avg' pooling at the end of each stage.
    use_batchnorm: BatchNorm after every convolution.
    freeze_batchnorm: normalise with the running statistics even in training (and never
      update them), as fine-tuning with small batches sometimes wants.
    global_pool: 'avg' averages the last feature map over space; 'flatten' keeps every
      position (the study's Keras model; many more parameters, overfits easily).
    dense_widths: hidden fully connected layers before the head.
    dropout_rate: dropout before every dense layer.
    head_type: 'linear' gives logits z = W x + b; 'cosine' gives s · z / ‖z‖, the same
      direction on a sphere of radius s = exp(`head_log_scale`), a learned scalar
      (initialised at log 10): the class scores are then cosines, what `train.loss =
      'cosine'` trains, and the scale only sets how confident the probabilities are.
    aux_classes: > 0 adds a second classifier, `aux_head`, on the same (dropped-out) features
      as `head`, trained on an auxiliary label (`config.data.aux_labels_csv`); only
      `return_aux=True` calls it, so inference and export see `head` alone.
  """

  num_classes: int
  stage_widths: Sequence[int] = (32, 64, 128, 256)
  convs_per_stage: int = 2
  kernel_size: int = 3
  stem_stride: int = 1
  pooling: str = "max"
  use_batchnorm: bool = True
  freeze_batchnorm: bool = False
  global_pool: str = "avg"
  dense_widths: Sequence[int] = (256,)
  dropout_rate: float = 0.3
  head_type: str = "linear"
  aux_classes: int = 0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    self.stages = [
        ConvStage(width, self.convs_per_stage, self.kernel_size,
                  first_stride=self.stem_stride if i == 0 else 1,
                  pooling=self.pooling, use_batchnorm=self.use_batchnorm,
                  freeze_batchnorm=self.freeze_batchnorm,
                  dtype=self.dtype, param_dtype=self.param_dtype, name=f"stage{i + 1}")
        for i, width in enumerate(self.stage_widths)]
    self.hidden = [nn.Dense(w, dtype=self.dtype, param_dtype=self.param_dtype,
                            name=f"dense{i}") for i, w in enumerate(self.dense_widths)]
    self.dropout = nn.Dropout(self.dropout_rate)
    self.head = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                         name="head")
    if self.head_type == "cosine":
      self.head_log_scale = self.param("head_log_scale", lambda _: jnp.full(
          (), jnp.log(10.0), self.param_dtype))
    elif self.head_type != "linear":
      raise ValueError(f"config.model.head_type must be 'linear' or 'cosine', got {self.head_type!r}")
    if self.aux_classes:
      self.aux_head = nn.Dense(self.aux_classes, dtype=self.dtype,
                               param_dtype=self.param_dtype, name="aux_head")

  def features(self, x, *, train: bool):
    """The last convolutional feature map (N, h, w, C): what Grad-CAM looks at."""
    for stage in self.stages:
      x = stage(x, train=train)
    return x

  def classify(self, features, *, train: bool, return_aux: bool = False):
    """Pooling/flatten, then the dense layers: logits (N, num_classes) in float32; with
    `return_aux`, (logits, auxiliary logits (N, aux_classes))."""
    if self.global_pool == "avg":
      x = jnp.mean(features, axis=(1, 2))
    elif self.global_pool == "flatten":
      x = features.reshape((features.shape[0], -1))
    else:
      raise ValueError(f"config.model.global_pool must be 'avg' or 'flatten', got {self.global_pool!r}")
    for dense in self.hidden:
      x = self.dropout(x, deterministic=not train)
      x = nn.relu(dense(x))
    x = self.dropout(x, deterministic=not train)
    # Low-precision compute still returns float32 logits; float64 (gradient checks) stays.
    as_float = lambda y: y.astype(jnp.promote_types(y.dtype, jnp.float32))
    logits = as_float(self.head(x))
    if self.head_type == "cosine":
      norm = jnp.sqrt(jnp.sum(logits * logits, axis=-1, keepdims=True) + 1e-12)
      logits = jnp.exp(as_float(self.head_log_scale)) * logits / norm
    if not return_aux:
      return logits
    if not self.aux_classes:
      raise ValueError("return_aux=True needs a model built with aux_classes > 0")
    return logits, as_float(self.aux_head(x))

  def __call__(self, x, *, train: bool, return_aux: bool = False):
    return self.classify(self.features(x, train=train), train=train, return_aux=return_aux)

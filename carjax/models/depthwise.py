"""Depthwise 2-D convolution with a fast CPU path.

XLA lowers a depthwise convolution (``feature_group_count == channels``) to a
grouped convolution. On GPU/TPU that is the right thing; on CPU it is roughly
10x slower than writing the same convolution as a sum of ``kh * kw`` shifted,
strided slices of the (padded) input, each scaled by one per-channel weight
row: XLA fuses that sum into one elementwise loop.

Two implementations with one parameter layout, ``kernel`` shaped
``(kh, kw, 1, C)`` exactly like ``nn.Conv(C, feature_group_count=C)``:

* ``'grouped'``: ``lax.conv_general_dilated(..., feature_group_count=C)``.
* ``'shifted'``: shifted slices, with a ``jax.custom_vjp`` whose backward pass
  is written the same way (the input gradient is a "full" correlation of the
  output gradient with the flipped kernel, split into stride phases; the
  kernel gradient is a per-tap reduction, scanned over the batch so that each
  step works on one example that stays in cache). Plain autodiff of the
  forward materialises every tap's slice for the kernel gradient and is several
  times slower.

``'auto'`` picks ``'shifted'`` on CPU and ``'grouped'`` elsewhere.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
Implementation = Literal['auto', 'shifted', 'grouped']
# A padding mode ('tf_same' | 'symmetric') or explicit ((top, bottom), (left, right)).
Padding = str | Sequence[tuple[int, int]]


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
  if isinstance(value, int):
    return (value, value)
  first, second = value
  return (int(first), int(second))


def same_padding_1d(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TensorFlow 'SAME' padding of one spatial axis.

  The output has ``ceil(size / stride)`` positions; when the total padding is
  odd the extra pixel goes after (bottom/right), as in TensorFlow and Keras.
  """
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return (total // 2, total - total // 2)


def conv_padding(
    spatial_shape: Sequence[int],
    kernel_size: int | Sequence[int],
    strides: int | Sequence[int],
    padding: Padding,
) -> tuple[tuple[int, int], tuple[int, int]]:
  """Explicit ``((top, bottom), (left, right))`` padding for a 2-D conv.

  Args:
    spatial_shape: (height, width) of the input.
    kernel_size: kernel height and width (or one int for both).
    strides: strides (or one int for both).
    padding: 'tf_same' (TensorFlow SAME: extra pixel bottom/right when the
      total is odd), 'symmetric' (PyTorch ``padding=(k - 1) // 2`` on both
      sides), or an explicit pair of (low, high) pairs, returned unchanged.
  """
  kernel_size = _pair(kernel_size)
  strides = _pair(strides)
  if not isinstance(padding, str):
    (top, bottom), (left, right) = padding
    return ((int(top), int(bottom)), (int(left), int(right)))
  if padding == 'tf_same':
    return tuple(  # pytype: disable=bad-return-type
        same_padding_1d(n, k, s)
        for n, k, s in zip(spatial_shape, kernel_size, strides))
  if padding == 'symmetric':
    return tuple(((k - 1) // 2, (k - 1) // 2) for k in kernel_size)  # pytype: disable=bad-return-type
  raise ValueError(
      f"padding must be 'tf_same', 'symmetric' or explicit pairs, got {padding!r}")


def resolve_implementation(implementation: Implementation) -> str:
  """'auto' -> 'shifted' on CPU, 'grouped' on accelerators."""
  if implementation == 'auto':
    return 'shifted' if jax.default_backend() == 'cpu' else 'grouped'
  if implementation not in ('shifted', 'grouped'):
    raise ValueError(
        f"implementation must be 'auto', 'shifted' or 'grouped', got {implementation!r}")
  return implementation


def _output_size(padded: int, kernel: int, stride: int) -> int:
  return (padded - kernel) // stride + 1


def _tap(x: Array, row: int, col: int, out_hw: tuple[int, int],
         strides: tuple[int, int]) -> Array:
  """The input pixels that kernel tap (row, col) multiplies, for every output.

  ``x`` is padded, batched NHWC; the result has the output's spatial shape.
  """
  (out_h, out_w), (stride_h, stride_w) = out_hw, strides
  start = (0, row, col, 0)
  limit = (x.shape[0], row + (out_h - 1) * stride_h + 1,
           col + (out_w - 1) * stride_w + 1, x.shape[3])
  return lax.slice(x, start, limit, (1, stride_h, stride_w, 1))


def _accumulation_dtype(dtype) -> jnp.dtype:
  # Sums of 9-25 taps lose too much in bfloat16/float16: accumulate in float32
  # inside the fused loop (no extra memory traffic) and cast the result back.
  return jnp.promote_types(dtype, jnp.float32)


def _shifted_forward(x_padded: Array, kernel: Array,
                     strides: tuple[int, int]) -> Array:
  kernel_h, kernel_w = kernel.shape[:2]
  out_hw = (_output_size(x_padded.shape[1], kernel_h, strides[0]),
            _output_size(x_padded.shape[2], kernel_w, strides[1]))
  acc_dtype = _accumulation_dtype(x_padded.dtype)
  out = None
  for row in range(kernel_h):
    for col in range(kernel_w):
      term = (_tap(x_padded, row, col, out_hw, strides).astype(acc_dtype) *
              kernel[row, col, 0].astype(acc_dtype))
      out = term if out is None else out + term
  return out.astype(x_padded.dtype)


def _input_gradient(grad_out: Array, kernel: Array, padded_hw: tuple[int, int],
                    strides: tuple[int, int]) -> Array:
  """d(loss)/d(x_padded) as shifted slices of the output gradient.

  x_padded[s*i + a] meets kernel tap a at output i, so the input position p
  receives sum over taps a with (p - a) divisible by s of
  grad_out[(p - a) / s] * kernel[a]. Splitting p by its phase r = p mod s makes
  every phase a stride-1 correlation of grad_out with the taps a = r, r+s, ...
  (no multiplications by the zeros a dilated gradient would hold); the phases
  are then interleaved back into the full-resolution gradient.
  """
  batch, out_h, out_w, channels = grad_out.shape
  kernel_h, kernel_w = kernel.shape[:2]
  stride_h, stride_w = strides
  padded_h, padded_w = padded_hw
  # Every phase covers ceil(padded / stride) positions; the surplus is cropped.
  phase_h, phase_w = -(-padded_h // stride_h), -(-padded_w // stride_w)
  acc_dtype = _accumulation_dtype(grad_out.dtype)
  grad_out = grad_out.astype(acc_dtype)

  phases = []
  for phase_row in range(stride_h):
    rows = list(range(phase_row, kernel_h, stride_h))
    for phase_col in range(stride_w):
      cols = list(range(phase_col, kernel_w, stride_w))
      # Phase position u (p = s*u + r) gets tap r + s*m from output u - m.
      low_h, low_w = len(rows) - 1, len(cols) - 1
      grad_padded = jnp.pad(
          grad_out,
          ((0, 0), (low_h, max(phase_h - out_h, 0)),
           (low_w, max(phase_w - out_w, 0)), (0, 0)))
      phase = None
      for m, row in enumerate(rows):
        for n, col in enumerate(cols):
          shifted = lax.slice(
              grad_padded, (0, low_h - m, low_w - n, 0),
              (batch, low_h - m + phase_h, low_w - n + phase_w, channels))
          term = shifted * kernel[row, col, 0].astype(acc_dtype)
          phase = term if phase is None else phase + term
      if phase is None:  # stride > kernel: this phase meets no tap.
        phase = jnp.zeros((batch, phase_h, phase_w, channels), acc_dtype)
      phases.append(phase)

  if stride_h == stride_w == 1:
    grad = phases[0]
  else:
    grad = jnp.stack(phases).reshape(stride_h, stride_w, batch, phase_h,
                                     phase_w, channels)
    grad = grad.transpose(2, 3, 0, 4, 1, 5).reshape(
        batch, phase_h * stride_h, phase_w * stride_w, channels)
  return grad[:, :padded_h, :padded_w]


def _kernel_gradient(x_padded: Array, grad_out: Array,
                     kernel_hw: tuple[int, int],
                     strides: tuple[int, int]) -> Array:
  """d(loss)/d(kernel): per tap, sum over batch and space of tap * grad_out.

  Reducing all taps of the whole batch at once makes XLA (CPU) materialise each
  shifted slice before reducing it; scanning over the batch keeps one
  example's input in cache for all taps, several times faster.
  """
  kernel_h, kernel_w = kernel_hw
  _, out_h, out_w, channels = grad_out.shape
  acc_dtype = _accumulation_dtype(grad_out.dtype)

  def one_example(total, example):
    image, grad = example
    per_tap = [
        jnp.sum(_tap(image[None], row, col, (out_h, out_w), strides)[0]
                .astype(acc_dtype) * grad.astype(acc_dtype), axis=(0, 1))
        for row in range(kernel_h) for col in range(kernel_w)
    ]
    return total + jnp.stack(per_tap), None

  total = jnp.zeros((kernel_h * kernel_w, channels), acc_dtype)
  total, _ = lax.scan(one_example, total, (x_padded, grad_out))
  return total.reshape(kernel_h, kernel_w, 1, channels)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _shifted_depthwise(x_padded: Array, kernel: Array,
                       strides: tuple[int, int]) -> Array:
  return _shifted_forward(x_padded, kernel, strides)


def _shifted_depthwise_fwd(x_padded, kernel, strides):
  return _shifted_forward(x_padded, kernel, strides), (x_padded, kernel)


def _shifted_depthwise_bwd(strides, residuals, grad_out):
  x_padded, kernel = residuals
  grad_x = _input_gradient(grad_out, kernel, x_padded.shape[1:3], strides)
  grad_kernel = _kernel_gradient(x_padded, grad_out, kernel.shape[:2], strides)
  return grad_x.astype(x_padded.dtype), grad_kernel.astype(kernel.dtype)


_shifted_depthwise.defvjp(_shifted_depthwise_fwd, _shifted_depthwise_bwd)


def depthwise_conv2d(
    x: Array,
    kernel: Array,
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = 'tf_same',
    implementation: Implementation = 'auto',
) -> Array:
  """Depthwise convolution of NHWC ``x`` with a ``(kh, kw, 1, C)`` kernel.

  Args:
    x: input, shaped (batch, height, width, channels).
    kernel: per-channel filters, shaped (kh, kw, 1, channels): the layout of
      ``nn.Conv(channels, feature_group_count=channels)``.
    strides: spatial strides.
    padding: 'tf_same', 'symmetric' or explicit pairs; see `conv_padding`.
    implementation: 'shifted', 'grouped' or 'auto' (backend dependent).

  Returns:
    (batch, out_height, out_width, channels), in x's dtype.
  """
  if kernel.ndim != 4 or kernel.shape[2] != 1 or kernel.shape[3] != x.shape[-1]:
    raise ValueError(f'kernel must be (kh, kw, 1, {x.shape[-1]}), '
                     f'got {kernel.shape}')
  if not isinstance(padding, str):  # static arguments must be hashable
    padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  return _depthwise_conv2d(x, kernel, _pair(strides), padding,
                           resolve_implementation(implementation))


# Jitted so that eager use (e.g. an un-jitted `model.init`) compiles one program
# per shape instead of dispatching and compiling every slice separately.
@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _depthwise_conv2d(x: Array, kernel: Array, strides: tuple[int, int],
                      padding: Padding, implementation: str) -> Array:
  pads = conv_padding(x.shape[1:3], kernel.shape[:2], strides, padding)
  if implementation == 'grouped':
    return lax.conv_general_dilated(
        x, kernel, window_strides=strides, padding=pads,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        feature_group_count=x.shape[-1])
  x_padded = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  return _shifted_depthwise(x_padded, kernel, strides)


class DepthwiseConv2D(nn.Module):
  """Depthwise 2-D convolution (no bias by default), NHWC.

  Attributes:
    kernel_size: (kh, kw) or one int.
    strides: spatial strides.
    padding: 'tf_same', 'symmetric' or explicit pairs.
    use_bias: add a per-channel bias.
    implementation: 'auto' | 'shifted' | 'grouped'.
    dtype: computation dtype (None: inferred from inputs and params).
    param_dtype: parameter dtype.
    kernel_init: initialiser for the (kh, kw, 1, C) kernel.
  """
  kernel_size: int | Sequence[int] = 3
  strides: int | Sequence[int] = 1
  padding: Padding = 'tf_same'
  use_bias: bool = False
  implementation: Implementation = 'auto'
  dtype: jnp.dtype | None = None
  param_dtype: jnp.dtype = jnp.float32
  # He init over each filter's own k*k taps. For the (kh, kw, 1, C) layout that
  # is flax's 'fan_in' (= kh * kw); it equals Keras' 'fan_out' on its
  # (kh, kw, C, 1) depthwise kernel.
  kernel_init: nn.initializers.Initializer = nn.initializers.variance_scaling(
      2.0, 'fan_in', 'truncated_normal')
  bias_init: nn.initializers.Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: Array) -> Array:
    channels = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init,
                        (*_pair(self.kernel_size), 1, channels),
                        self.param_dtype)
    bias = (self.param('bias', self.bias_init, (channels,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = depthwise_conv2d(x, kernel, strides=self.strides, padding=self.padding,
                         implementation=self.implementation)
    if bias is not None:
      y = y + bias
    return y

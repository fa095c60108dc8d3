"""Reference forward/backward passes of every layer `CustomCNN` uses, written from the formulas.

Each function here is a direct transcription of an equation in `docs/mathematics.md`
(the equation numbers in the comments refer to that document). They are deliberately
simple (Python loops over kernel offsets, strided slices, `jnp.einsum`) and are NOT used
for training: `tests/test_mathematics.py` compares them with `jax.grad`/`jax.vjp` of the
Flax/Optax layers, which checks that the written derivation matches what the library
differentiates. No backward function below calls `jax.grad`, `jax.vjp` or a convolution
transpose rule.

Conventions (as in Flax): activations are NHWC, a convolution kernel is `(kh, kw, C_in,
C_out)`, a dense kernel is `(D_in, D_out)` and a dense layer acts on row vectors:
`Y = X W + b`.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from jax import lax

Padding = str | Sequence[tuple[int, int]]


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------

def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


def same_padding(size: int, k: int, s: int) -> tuple[int, int]:
  """(low, high) padding of 'SAME' along one axis: out = ceil(size / s), low = total // 2."""
  out = -(-size // s)
  total = max((out - 1) * s + k - size, 0)
  return total // 2, total - total // 2


def conv_padding(in_hw: tuple[int, int], k_hw: tuple[int, int], strides: tuple[int, int],
                 padding: Padding) -> tuple[tuple[int, int], tuple[int, int]]:
  """Explicit ((top, bottom), (left, right)) padding for 'SAME', 'VALID' or explicit pairs."""
  if isinstance(padding, str):
    if padding.upper() == "VALID":
      return (0, 0), (0, 0)
    if padding.upper() == "SAME":
      return tuple(same_padding(n, k, s) for n, k, s in zip(in_hw, k_hw, strides))
    raise ValueError(f"unknown padding {padding!r}")
  (pt, pb), (pl, pr) = padding
  return (pt, pb), (pl, pr)


def _out_size(padded: int, k: int, s: int) -> int:
  """Eq. (2): number of window positions along one axis."""
  return (padded - k) // s + 1


def _window(x, p: int, q: int, out_hw: tuple[int, int], strides: tuple[int, int]):
  """`x[:, s_h*i + p, s_w*j + q, :]` for all output positions (i, j): a strided slice."""
  (ho, wo), (sh, sw) = out_hw, strides
  return x[:, p:p + sh * (ho - 1) + 1:sh, q:q + sw * (wo - 1) + 1:sw, :]


def _scatter_window(v, p: int, q: int, x_shape, strides: tuple[int, int]):
  """The adjoint of `_window`: an array of `x_shape` holding v[n,i,j,c] at (s_h i + p, s_w j + q).

  Written as a stride dilation (s-1 zeros between entries, `lax.pad` interior padding)
  followed by an offset (low padding p) and zero fill up to the input size.
  """
  (sh, sw), (_, ho, wo, _) = strides, v.shape
  h, w = x_shape[1:3]
  return lax.pad(v, jnp.asarray(0, v.dtype),
                 ((0, 0, 0), (p, h - p - sh * (ho - 1) - 1, sh - 1),
                  (q, w - q - sw * (wo - 1) - 1, sw - 1), (0, 0, 0)))


def _pad_hw(x, pads, value=0.0):
  (pt, pb), (pl, pr) = pads
  return lax.pad(x, jnp.asarray(value, x.dtype),
                 ((0, 0, 0), (pt, pb, 0), (pl, pr, 0), (0, 0, 0)))


# ----------------------------------------------------------------------------------------
# 2-D convolution (cross-correlation), Section 2
# ----------------------------------------------------------------------------------------

def conv2d_patches(x, k_hw, *, strides=1, padding: Padding = "SAME"):
  """P[p,q,n,i,j,c] = Xpad[n, s_h i + p, s_w j + q, c]: one strided slice per kernel offset."""
  kh, kw = k_hw
  strides = _pair(strides)
  pads = conv_padding(x.shape[1:3], (kh, kw), strides, padding)
  xp = _pad_hw(x, pads)
  out_hw = (_out_size(xp.shape[1], kh, strides[0]), _out_size(xp.shape[2], kw, strides[1]))
  return jnp.stack([jnp.stack([_window(xp, p, q, out_hw, strides) for q in range(kw)])
                    for p in range(kh)])


def conv2d_forward(x, kernel, bias=None, *, strides=1, padding: Padding = "SAME"):
  """Eq. (3): Y[n,i,j,o] = b[o] + sum_{p,q,c} Xpad[n, s_h i + p, s_w j + q, c] K[p,q,c,o]."""
  patches = conv2d_patches(x, kernel.shape[:2], strides=strides, padding=padding)
  y = jnp.einsum("pqnijc,pqco->nijo", patches, kernel)
  if bias is not None:
    y = y + bias
  return y


def conv2d_backward_kernel(x, dy, kernel_shape, *, strides=1, padding: Padding = "SAME"):
  """Eq. (5): dK[p,q,c,o] = sum_{n,i,j} Xpad[n, s_h i + p, s_w j + q, c] dY[n,i,j,o].

  A (strided) correlation of the padded input with the output gradient.
  """
  patches = conv2d_patches(x, kernel_shape[:2], strides=strides, padding=padding)
  return jnp.einsum("pqnijc,nijo->pqco", patches, dy)


def conv2d_backward_bias(dy):
  """Eq. (6): db[o] = sum_{n,i,j} dY[n,i,j,o]."""
  return dy.sum(axis=(0, 1, 2))


def flip_transpose_kernel(kernel):
  """Eq. (9): K~[p,q,o,c] = K[kh-1-p, kw-1-q, c, o] (spatial flip, channels swapped)."""
  return jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))


def conv2d_backward_input(dy, kernel, input_shape, *, strides=1, padding: Padding = "SAME",
                          flip: bool = True):
  """Eq. (10): dX = VALID correlation of the dilated, fully padded dY with K~.

  dY is stride-dilated (s-1 zeros between entries) and padded by
  (k-1-pad_low, k-1-pad_high+r) on each spatial axis, r = (H + pads - k) mod s;
  negative amounts crop. `flip=False` gives the deliberately wrong variant (kernel
  transposed but not flipped) that the tests use to show the check has teeth.
  """
  kh, kw, _, _ = kernel.shape
  sh, sw = strides = _pair(strides)
  h, w = input_shape[1:3]
  (pt, pb), (pl, pr) = conv_padding((h, w), (kh, kw), strides, padding)
  rh = (h + pt + pb - kh) % sh
  rw = (w + pl + pr - kw) % sw
  dyp = lax.pad(dy, jnp.asarray(0, dy.dtype),
                ((0, 0, 0), (kh - 1 - pt, kh - 1 - pb + rh, sh - 1),
                 (kw - 1 - pl, kw - 1 - pr + rw, sw - 1), (0, 0, 0)))
  k_t = flip_transpose_kernel(kernel) if flip else jnp.transpose(kernel, (0, 1, 3, 2))
  return conv2d_forward(dyp, k_t, strides=1, padding="VALID")


# ----------------------------------------------------------------------------------------
# pooling, Section 3 (VALID windows, as `nn.max_pool`/`nn.avg_pool` default to)
# ----------------------------------------------------------------------------------------

def _pool_geometry(x_shape, window, strides):
  window, strides = _pair(window), _pair(strides)
  out_hw = (_out_size(x_shape[1], window[0], strides[0]),
            _out_size(x_shape[2], window[1], strides[1]))
  return window, strides, out_hw


def maxpool_forward(x, window=2, strides=2):
  """Eq. (11): Y[n,i,j,c] = max_{p,q} X[n, s_h i + p, s_w j + q, c]."""
  window, strides, out_hw = _pool_geometry(x.shape, window, strides)
  y = None
  for p in range(window[0]):
    for q in range(window[1]):
      v = _window(x, p, q, out_hw, strides)
      y = v if y is None else jnp.maximum(y, v)
  return y


def maxpool_backward(x, dy, window=2, strides=2):
  """Eq. (12): dY[n,i,j,c] goes to the argmax of its window; ties -> first in row-major order.

  Overlapping windows accumulate (`+=`).
  """
  window, strides, out_hw = _pool_geometry(x.shape, window, strides)
  y = maxpool_forward(x, window, strides)
  dx = jnp.zeros_like(x)
  claimed = jnp.zeros(y.shape, bool)
  for p in range(window[0]):
    for q in range(window[1]):
      take = (_window(x, p, q, out_hw, strides) == y) & ~claimed
      claimed = claimed | take
      dx = dx + _scatter_window(jnp.where(take, dy, jnp.zeros_like(dy)), p, q, x.shape, strides)
  return dx


def avgpool_forward(x, window=2, strides=2):
  """Eq. (13): Y[n,i,j,c] = (1 / (k_h k_w)) sum_{p,q} X[n, s_h i + p, s_w j + q, c]."""
  window, strides, out_hw = _pool_geometry(x.shape, window, strides)
  y = 0
  for p in range(window[0]):
    for q in range(window[1]):
      y = y + _window(x, p, q, out_hw, strides)
  return y / (window[0] * window[1])


def avgpool_backward(x_shape, dy, window=2, strides=2):
  """Eq. (14): dX[n, s_h i + p, s_w j + q, c] += dY[n,i,j,c] / (k_h k_w)."""
  window, strides, _ = _pool_geometry(x_shape, window, strides)
  share = dy / (window[0] * window[1])
  dx = jnp.zeros(x_shape, dy.dtype)
  for p in range(window[0]):
    for q in range(window[1]):
      dx = dx + _scatter_window(share, p, q, x_shape, strides)
  return dx


def global_avgpool_forward(x):
  """Eq. (15): Y[n,c] = (1 / HW) sum_{h,w} X[n,h,w,c]."""
  return x.mean(axis=(1, 2))


def global_avgpool_backward(x_shape, dy):
  """Eq. (15): dX[n,h,w,c] = dY[n,c] / (HW)."""
  n, h, w, c = x_shape
  return jnp.broadcast_to(dy[:, None, None, :] / (h * w), x_shape)


def flatten_forward(x):
  """Eq. (16): Y[n, (h W + w) C + c] = X[n,h,w,c] (row-major)."""
  return x.reshape((x.shape[0], -1))


def flatten_backward(x_shape, dy):
  """Eq. (16): the inverse reshape."""
  return dy.reshape(x_shape)


# ----------------------------------------------------------------------------------------
# dense, Section 4
# ----------------------------------------------------------------------------------------

def dense_forward(x, kernel, bias=None):
  """Eq. (17): Y = X W + b with X (N, D_in), W (D_in, D_out)."""
  y = x @ kernel
  return y if bias is None else y + bias


def dense_backward(x, kernel, dy):
  """Eq. (18): (dX, dW, db) = (dY W^T, X^T dY, sum_n dY)."""
  return dy @ kernel.T, x.T @ dy, dy.sum(axis=0)


# ----------------------------------------------------------------------------------------
# ReLU, Section 5
# ----------------------------------------------------------------------------------------

def relu_forward(x):
  """Eq. (19): max(x, 0)."""
  return jnp.where(x > 0, x, jnp.zeros_like(x))


def relu_backward(x, dy):
  """Eq. (20): dY * 1[x > 0]; JAX's subgradient at exactly 0 is 0."""
  return jnp.where(x > 0, dy, jnp.zeros_like(dy))


# ----------------------------------------------------------------------------------------
# BatchNorm, Section 6 (statistics over every axis but the last)
# ----------------------------------------------------------------------------------------

def batchnorm_train_forward(x, scale, bias, *, eps=1e-5):
  """Eqs. (21)-(22). Returns (y, cache) with cache = (x_hat, inv_std, mean, var)."""
  axes = tuple(range(x.ndim - 1))
  mean = x.mean(axis=axes)
  var = ((x - mean) ** 2).mean(axis=axes)          # biased (1/M) variance
  inv_std = 1.0 / jnp.sqrt(var + eps)
  x_hat = (x - mean) * inv_std
  return scale * x_hat + bias, (x_hat, inv_std, mean, var)


def batchnorm_train_backward(dy, scale, cache):
  """Eq. (24): dx = (gamma / sigma) (dy - mean(dy) - x_hat mean(dy x_hat)); Eq. (23) for gamma, beta.

  Returns (dx, dscale, dbias).
  """
  x_hat, inv_std, _, _ = cache
  axes = tuple(range(dy.ndim - 1))
  dscale = (dy * x_hat).sum(axis=axes)
  dbias = dy.sum(axis=axes)
  dx = scale * inv_std * (dy - dy.mean(axis=axes) - x_hat * (dy * x_hat).mean(axis=axes))
  return dx, dscale, dbias


def batchnorm_running_update(running_mean, running_var, mean, var, *, momentum=0.9):
  """Eq. (25): r <- momentum r + (1 - momentum) batch statistic (biased variance)."""
  return (momentum * running_mean + (1 - momentum) * mean,
          momentum * running_var + (1 - momentum) * var)


def batchnorm_eval_forward(x, scale, bias, running_mean, running_var, *, eps=1e-5):
  """Eq. (26): an affine map y = a x + c with a = gamma / sqrt(var_r + eps)."""
  a = scale / jnp.sqrt(running_var + eps)
  return a * x + (bias - a * running_mean)


def batchnorm_eval_backward(dy, scale, running_var, *, eps=1e-5):
  """Eq. (26): dx = a dy (the statistics are constants in eval mode)."""
  return dy * (scale / jnp.sqrt(running_var + eps))


# ----------------------------------------------------------------------------------------
# dropout, Section 7
# ----------------------------------------------------------------------------------------

def dropout_forward(x, keep_mask, rate):
  """Eq. (27): inverted dropout y = m x / (1 - rate), m in {0, 1}."""
  return jnp.where(keep_mask, x / (1.0 - rate), jnp.zeros_like(x))


def dropout_backward(dy, keep_mask, rate):
  """Eq. (27): dx = m dy / (1 - rate) (the same mask as the forward pass)."""
  return jnp.where(keep_mask, dy / (1.0 - rate), jnp.zeros_like(dy))


# ----------------------------------------------------------------------------------------
# softmax cross-entropy, Section 8
# ----------------------------------------------------------------------------------------

def smooth_labels(one_hot, alpha):
  """Eq. (29): y = (1 - alpha) onehot + alpha / K."""
  return (1.0 - alpha) * one_hot + alpha / one_hot.shape[-1]


def log_softmax(z):
  """Eq. (28) with the log-sum-exp shift m = max_k z_k."""
  m = lax.stop_gradient(z.max(axis=-1, keepdims=True))
  shifted = z - m
  return shifted - jnp.log(jnp.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(z):
  """exp(z - m) / sum exp(z - m)."""
  e = jnp.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def softmax_cross_entropy(logits, targets):
  """Eq. (28): per-example loss L_n = -sum_k y_nk log softmax(z_n)_k."""
  return -(targets * log_softmax(logits)).sum(axis=-1)


def softmax_cross_entropy_grad(logits, targets):
  """Eq. (30): dL_n/dz_n = softmax(z_n) (sum_k y_nk) - y_n = softmax(z_n) - y_n for a distribution."""
  return softmax(logits) * targets.sum(axis=-1, keepdims=True) - targets



# ----------------------------------------------------------------------------------------
# cosine loss and cosine head (Section 8.2)
# ----------------------------------------------------------------------------------------

def cosine_loss(logits, labels):
  """Eq. (33): L_n = 1 - z_{n,t} / ||z_n||."""
  norm = jnp.sqrt((logits ** 2).sum(axis=-1))
  return 1.0 - logits[jnp.arange(len(labels)), labels] / norm


def cosine_loss_grad(logits, labels):
  """Eq. (34): dL_n/dz_n = -(e_t - zhat_t zhat) / ||z_n||."""
  norm = jnp.sqrt((logits ** 2).sum(axis=-1, keepdims=True))
  unit = logits / norm
  one_hot = jnp.eye(logits.shape[-1])[labels]
  return -(one_hot - unit[jnp.arange(len(labels)), labels][:, None] * unit) / norm


def cosine_head_forward(z, log_scale):
  """Eq. (35): l = e^sigma z / ||z||."""
  return jnp.exp(log_scale) * z / jnp.sqrt((z ** 2).sum(axis=-1, keepdims=True))


def cosine_head_backward(z, log_scale, dl):
  """Eq. (36): dz = (s / ||z||)(dl - <dl, zhat> zhat), dsigma = sum_n <dl_n, l_n>."""
  norm = jnp.sqrt((z ** 2).sum(axis=-1, keepdims=True))
  unit = z / norm
  s = jnp.exp(log_scale)
  dz = s / norm * (dl - (dl * unit).sum(axis=-1, keepdims=True) * unit)
  return dz, float((dl * s * unit).sum())

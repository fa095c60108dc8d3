"""Carjax's evaluation preprocessing in TensorFlow, for the exported model: Pillow-exact
bicubic resizing and image decoding, with TFLite-builtin ops only (range, arithmetic, matmul,
where).

Resizing reproduces `carjax.data.decode.resize_to` (PIL's bicubic) rather than calling
``tf.image.resize``: Pillow's filter weights (Keys cubic, a = -0.5, kernel widened by the
shrink factor, i.e. antialiased, renormalised at the borders, rounded to its 22-bit fixed
point) are built as two small matrices and applied as matrix products, one axis after the
other in Pillow's order, rounding to whole grey levels after each pass as Pillow does. The
weights are computed in float32 where Pillow uses double, which is the only difference left:
over 60 random sizes resized to 224×224, 99.995% (squash), 99.997% (crop) and 99.997% (pad)
of the values were identical to PIL's and the rest one grey level off. By comparison
``tf.image.resize(method='bicubic', antialias=True)`` (same kernel, but no fixed point, no
rounding between passes, different border handling) matched 79% of the values, up to 4
grey levels off; and its ``ScaleAndTranslate`` op is neither a TFLite builtin nor a select
TF op, so it would also have ruled out a TFLite model. The matrices cost O(H·W·S)
multiply-adds per image: 0.01 s for 640×480 and 0.3 s for a 12-megapixel photo on two busy
CPU cores (PIL: 0.004 s and 0.19 s).

Decoding (``predict_bytes``, ``tf.io.decode_image``: JPEG, PNG, GIF, BMP, WebP) follows
`carjax.data.decode.load_rgb` for the usual cases (greyscale → RGB, transparency composited
onto white, first GIF frame, 16-bit PNG to 8 bits within one grey level) but does NOT apply
EXIF orientation: rotate phone photos before sending them, or decode them yourself and use
``serving_default``.
"""

from __future__ import annotations

import functools

import numpy as np

from carjax import tensorflow_setup
from carjax.data import decode

# Through tensorflow_setup: TensorFlow must not see GPUs.
tf = tensorflow_setup.import_tensorflow(
    "export", "Exporting a SavedModel or TFLite model")

_CUBIC_A = -0.5  # PIL's (and TensorFlow's 'keyscubic') bicubic coefficient.
_FIXED_POINT_ONE = float(1 << 22)  # Pillow's PRECISION_BITS = 32 - 8 - 2.
_ALPHA_BACKGROUND = 255.0  # carjax.data.decode composites transparency onto white.


def _cubic(x):
  """PIL's bicubic filter (Keys, a = -0.5), zero beyond |x| = 2."""
  a = _CUBIC_A
  x = tf.abs(x)
  near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
  far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
  return tf.where(x < 1.0, near, tf.where(x < 2.0, far, tf.zeros_like(x)))


def pil_bicubic_matrix(in_size, num_rows: int, content_size=None, offset=0, box_start2=0,
                       box_extent=None):
  """Float32 ``[num_rows, in_size]`` weights of PIL's bicubic resampling along one axis,
  and the ``[num_rows]`` mask of rows that hold content.

  Output row ``r`` holds content pixel ``j = r - offset`` (rows with ``j`` outside
  ``[0, content_size)`` are all zero: letterbox bars). The content resamples the input span
  ``[box_start2 / 2, box_start2 / 2 + box_extent)`` (PIL's `box`; crop boxes start on half
  pixels, hence twice the start) to ``content_size`` pixels with the weights of Pillow's
  ``precompute_coeffs``: centre ``box_start + (j + 0.5) · scale``, filter widened by
  ``max(scale, 1)``, weights renormalised to sum to one (which clips the kernel at the image
  borders), then rounded to Pillow's 22-bit fixed point. All sizes may be int32 tensors.
  """
  i32 = lambda v: tf.cast(v, tf.int32)
  in_size = i32(in_size)
  content = i32(num_rows if content_size is None else content_size)
  extent = in_size if box_extent is None else i32(box_extent)
  j = tf.range(num_rows, dtype=tf.int32) - i32(offset)
  x = tf.range(in_size, dtype=tf.int32)
  # (x + 0.5 - centre) / max(scale, 1) as one exact integer ratio: float32 positions of
  # pixels hundreds of pixels in would otherwise cost ~1e-5 of weight.
  numerator = (2 * x[None, :] + 1 - i32(box_start2)) * content - (2 * j[:, None] + 1) * extent
  denominator = 2 * tf.maximum(extent, content)
  # Pillow only evaluates pixels within `support` of the centre; the filter is zero beyond,
  # so evaluating every pixel gives the same weights.
  weights = _cubic(tf.cast(numerator, tf.float32) / tf.cast(denominator, tf.float32))
  total = tf.reduce_sum(weights, axis=1, keepdims=True)
  weights = weights / tf.where(tf.equal(total, 0.0), tf.ones_like(total), total)
  # Pillow's 8-bit path uses the weights as 22-bit fixed point (rounded away from zero);
  # k / 2**22 with |k| < 2**24 is exact in float32.
  scaled = weights * _FIXED_POINT_ONE
  weights = tf.where(scaled < 0.0, tf.math.ceil(scaled - 0.5),
                     tf.floor(scaled + 0.5)) / _FIXED_POINT_ONE
  valid = tf.logical_and(j >= 0, j < content)
  return tf.where(valid[:, None], weights, tf.zeros_like(weights)), valid


def _round_to_uint8_levels(x):
  """PIL's clip8: round half up, then clip to [0, 255] (kept as float32)."""
  return tf.clip_by_value(tf.floor(x + 0.5), 0.0, 255.0)


def resize_images(images, size, mode: str = "squash", pad_value: int = 0,
                  vertical_first_rule: bool = True):
  """uint8 (or integer-valued float) ``[batch, H, W, 3]`` → float32 ``[batch, h, w, 3]``
  for `size` S (a square) or (h, w).

  The result holds whole grey levels 0..255, as `carjax.data.decode.resize_to` (PIL bicubic,
  'squash', 'crop' or 'pad') would produce for each image; an image already h×w comes back
  unchanged in 'squash' mode. `vertical_first_rule`: resample vertically first where Pillow
  13 does (see `pillow_resamples_vertically_first`); False: always horizontally first, as
  older Pillow does.
  """
  size_h, size_w = decode.image_hw(size)
  images = tf.cast(images, tf.float32)
  shape = tf.shape(images)
  height, width = shape[1], shape[2]
  h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  if mode == "squash":
    out_h, out_w = tf.constant(float(size_h)), tf.constant(float(size_w))
    rows_y, valid_y = pil_bicubic_matrix(height, size_h)
    rows_x, valid_x = pil_bicubic_matrix(width, size_w)
  elif mode == "crop":
    out_h, out_w = tf.constant(float(size_h)), tf.constant(float(size_w))
    rows_y, valid_y, rows_x, valid_x = _centre_box_matrices(height, width, size_h, size_w)
  elif mode == "pad":
    scale = tf.minimum(float(size_w) / w_f, float(size_h) / h_f)
    # Python's round() (half to even) is what resize_to uses; so does tf.round.
    out_h = tf.clip_by_value(tf.round(h_f * scale), 1.0, float(size_h))
    out_w = tf.clip_by_value(tf.round(w_f * scale), 1.0, float(size_w))
    content_h, content_w = tf.cast(out_h, tf.int32), tf.cast(out_w, tf.int32)
    rows_y, valid_y = pil_bicubic_matrix(height, size_h, content_h, (size_h - content_h) // 2)
    rows_x, valid_x = pil_bicubic_matrix(width, size_w, content_w, (size_w - content_w) // 2)
  else:
    raise ValueError(f"resize mode must be 'squash', 'crop' or 'pad', got {mode!r}")
  x = tf.transpose(images, [0, 3, 1, 2])  # [b, c, H, W]
  horizontal = lambda v: _round_to_uint8_levels(tf.matmul(v, rows_x, transpose_b=True))
  vertical = lambda v: _round_to_uint8_levels(tf.matmul(rows_y, v))
  # Each pass is rounded to uint8 levels, so the order matters. Pillow resamples
  # horizontally first, except (Pillow 13) when the height shrinks by more than twice as
  # many pixels as the width does.
  if vertical_first_rule:
    vertical_first = (h_f - out_h) > 2.0 * tf.maximum(w_f - out_w, 0.0)
    x = tf.cond(vertical_first, lambda: horizontal(vertical(x)),
                lambda: vertical(horizontal(x)))
  else:
    x = vertical(horizontal(x))
  x = tf.transpose(x, [0, 2, 3, 1])
  if mode == "pad":
    inside = tf.logical_and(valid_y[:, None], valid_x[None, :])[..., None]
    x = tf.where(inside, x, tf.fill(tf.shape(x), float(pad_value)))
  return x


def _centre_box_matrices(height, width, size_h: int, size_w: int):
  """Resampling matrices of 'crop' mode: the centre box of the canvas's aspect.

  `resize_to` cuts the box ``size · min(W / size_w, H / size_h)`` (PIL's `box`, float
  edges); for a square canvas that is the centre min(H, W) square, whose half-pixel start
  ``(H - side) / 2`` is exact as ``box_start2 = H - side``. A non-square box generally has
  fractional edges, which the integer `box_start2` cannot express: it is refused here.
  """
  if size_h == size_w:
    side = tf.minimum(height, width)
    rows_y, valid_y = pil_bicubic_matrix(height, size_h, box_start2=height - side,
                                         box_extent=side)
    rows_x, valid_x = pil_bicubic_matrix(width, size_w, box_start2=width - side,
                                         box_extent=side)
    return rows_y, valid_y, rows_x, valid_x
  raise ValueError("exporting resize_mode='crop' needs a square data.image_size; use "
                   "'squash' or 'pad' for a non-square canvas")


@functools.lru_cache(maxsize=None)
def pillow_resamples_vertically_first() -> bool:
  """Whether the installed Pillow resamples vertically first when the height shrinks by more
  than twice as many pixels as the width (Pillow 13 does; older Pillow always starts with
  the horizontal pass). Probed on a tall image rather than read from the version number."""
  probe = np.random.default_rng(0).integers(0, 256, (1, 97, 40, 3)).astype(np.uint8)
  expected = decode.resize_to(probe[0], 32, "squash").astype(np.float32)
  error = {rule: float(np.abs(resize_images(probe, 32, "squash",
                                            vertical_first_rule=rule)[0].numpy()
                              - expected).mean())
           for rule in (True, False)}
  return error[True] <= error[False]


def decode_image(image_bytes):
  """One encoded image (scalar string) → uint8 ``[H, W, 3]`` RGB, like `load_rgb` minus EXIF.

  Greyscale is replicated to RGB; an alpha channel is composited onto white.
  """
  image = tf.io.decode_image(image_bytes, channels=0, dtype=tf.uint8, expand_animations=False)
  image = tf.cast(image, tf.float32)
  channels = tf.shape(image)[-1]
  has_alpha = tf.logical_or(tf.equal(channels, 2), tf.equal(channels, 4))
  color = tf.cond(channels >= 3, lambda: image[..., :3],
                  lambda: tf.tile(image[..., :1], [1, 1, 3]))
  alpha = tf.cond(has_alpha, lambda: image[..., -1:] / 255.0,
                  lambda: tf.ones_like(image[..., :1]))
  rgb = color * alpha + _ALPHA_BACKGROUND * (1.0 - alpha)
  return tf.cast(_round_to_uint8_levels(rgb), tf.uint8)

"""Exports a trained carjax model for serving outside Python-JAX: a TensorFlow SavedModel
(and optionally a TFLite flatbuffer) with carjax's evaluation preprocessing inside.

The model itself is lowered with `jax.experimental.jax2tf` (StableHLO inside an
`XlaCallModule` op, batch dimension symbolic); everything around it is plain TensorFlow:

* signature ``serving_default``: ``images`` uint8 ``[batch, H, W, 3]`` RGB, any H and W
  (one size per call) → ``probabilities`` float32 ``[batch, K]``, ``logits`` ``[batch, K]``,
  ``class_index`` int32 ``[batch]``, ``class_name`` string ``[batch]``;
* signature ``predict_bytes``: ``image_bytes`` string ``[batch]`` of encoded JPEG/PNG/GIF/BMP
  files (each its own size) → the same outputs;
* signature ``metadata``: no input → ``class_names`` string ``[K]`` and ``conventions``
  (the JSON of `conventions.json`).

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

import dataclasses
import datetime
import functools
import json
import os
import shutil
import tempfile
from typing import Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

import carjax
from carjax import tensorflow_setup

# Before jax2tf: TensorFlow must not see GPUs.
tf = tensorflow_setup.import_tensorflow(
    "export", "Exporting a SavedModel or TFLite model")
from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from carjax import inference
from carjax import models
from carjax.data import decode
from carjax import checkpoint as ckpt
from carjax.models import tta

SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
CLASS_NAMES_FILE = "class_names.txt"
CONVENTIONS_FILE = "conventions.json"
EXPORT_FORMAT = "carjax-tf-export/1"

_CUBIC_A = -0.5  # PIL's (and TensorFlow's 'keyscubic') bicubic coefficient.
_FIXED_POINT_ONE = float(1 << 22)  # Pillow's PRECISION_BITS = 32 - 8 - 2.
_ALPHA_BACKGROUND = 255.0  # carjax.data.decode composites transparency onto white.


# ----------------------------------------------------------------------------------------
# Preprocessing in TensorFlow (TFLite-builtin ops only: range, arithmetic, matmul, where).
# ----------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------
# The exported module.
# ----------------------------------------------------------------------------------------

def _to_tf_variables(tree):
  return jax.tree.map(lambda a: tf.Variable(np.asarray(a), trainable=False), tree)


class CarjaxServingModule(tf.Module):
  """A `tf.Module` holding the weights, class names and conventions of one carjax model."""

  def __init__(self, predictor: inference.Predictor, conventions: dict, *,
               platforms: Sequence[str] = ("cpu",), asset_paths: Sequence[str] = ()):
    super().__init__(name="carjax")
    self._size = tuple(int(v) for v in predictor.image_size)  # (height, width)
    self._resize_mode = str(predictor.resize_mode)
    self._vertical_first_rule = bool(conventions["resize_vertical_first_rule"])
    model = predictor.model
    input_spec = predictor.input_spec
    flip_tta = predictor.flip_tta

    def forward(variables, images):
      # `images`: float32 [b, h, w, 3] of whole grey levels, i.e. exactly the uint8 pixels
      # carjax's Predictor feeds; the rest is Predictor._logits_fn.
      apply = lambda pixels: models.apply_pixels(model, variables, pixels, input_spec,
                                                 train=False).astype(jnp.float32)
      return tta.flip_averaged_logits(apply, images) if flip_tta else apply(images)

    self.variables_tree = _to_tf_variables(jax.device_get(predictor.variables))
    self._forward = jax2tf.convert(
        forward, polymorphic_shapes=[None, f"(b, {self._size[0]}, {self._size[1]}, 3)"],
        with_gradient=False, native_serialization_platforms=tuple(platforms))
    self.class_names = tf.Variable(list(predictor.class_names), dtype=tf.string,
                                   trainable=False, name="class_names")
    self.conventions = tf.Variable(json.dumps(conventions, indent=2, sort_keys=True),
                                   dtype=tf.string, trainable=False, name="conventions")
    self.image_size = tf.Variable(list(self._size), dtype=tf.int32, trainable=False,
                                  name="image_size")  # [height, width]
    # Tracked so that tf.saved_model.save copies them into <saved_model>/assets/.
    self.assets = [tf.saved_model.Asset(p) for p in asset_paths]

  def _classify(self, resized):
    logits = self._forward(self.variables_tree, resized)
    probabilities = tf.nn.softmax(logits, axis=-1)
    class_index = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    return {"probabilities": probabilities, "logits": logits, "class_index": class_index,
            "class_name": tf.gather(self.class_names, class_index)}

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
               autograph=False)
  def predict_images(self, images):
    """uint8 RGB ``[batch, H, W, 3]`` → probabilities, logits, class_index, class_name."""
    return self._classify(resize_images(images, self._size, self._resize_mode,
                                        vertical_first_rule=self._vertical_first_rule))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
               autograph=False)
  def predict_bytes(self, image_bytes):
    """Encoded JPEG/PNG/GIF/BMP files ``[batch]`` → the outputs of `predict_images`."""
    size, mode, rule = self._size, self._resize_mode, self._vertical_first_rule
    resized = tf.map_fn(
        lambda b: resize_images(decode_image(b)[None], size, mode,
                                vertical_first_rule=rule)[0], image_bytes,
        fn_output_signature=tf.TensorSpec([*size, 3], tf.float32))
    return self._classify(resized)

  @tf.function(input_signature=[], autograph=False)
  def metadata(self):
    return {"class_names": tf.identity(self.class_names),
            "conventions": tf.identity(self.conventions)}


# ----------------------------------------------------------------------------------------
# Export.
# ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ExportResult:
  output_dir: str
  saved_model_dir: str
  tflite_path: str | None
  tflite_bytes: int | None
  tflite_select_tf_ops: bool | None
  conventions: dict


def _json_safe(value):
  try:
    json.dumps(value)
    return value
  except TypeError:
    if isinstance(value, dict):
      return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
      return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
      return value.item()
    return repr(value)


def conventions_for(predictor: inference.Predictor, workdir: str, which: str,
                    platforms: Sequence[str], tflite: bool = False) -> dict:
  """What a serving client must know, and where the weights came from."""
  meta = predictor.checkpoint_meta or {}
  conventions = {
      "format": EXPORT_FORMAT,
      "carjax_version": carjax.__version__,
      "jax_version": jax.__version__,
      "tensorflow_version": tf.__version__,
      "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "source": {"workdir": os.path.abspath(workdir), "checkpoint": which,
                 "step": meta.get("step"), "epoch": meta.get("epoch"),
                 "best_metric": meta.get("best_metric"), "best_value": meta.get("best_value"),
                 "eval": _json_safe(meta.get("eval", {}))},
      "model": predictor.config.model.name,
      "num_classes": len(predictor.class_names),
      "class_names": list(predictor.class_names),
      "image_size": [int(v) for v in predictor.image_size],  # [height, width]
      "resize_mode": str(predictor.resize_mode),
      "pad_value": 0,
      "resize_vertical_first_rule": pillow_resamples_vertically_first(),
      "resize": ("PIL bicubic as carjax.data.decode.resize_to (Keys a=-0.5, antialiased when "
                 "shrinking, two passes in Pillow 13's order, rounded to uint8 levels after "
                 "each); identical up to PIL's fixed-point weights (a pixel may differ by one "
                 "grey level)"),
      "input": "uint8 RGB [batch, H, W, 3], values 0..255; or encoded image bytes [batch]",
      "input_mean": [float(v) for v in predictor.input_spec.mean],
      "input_std": [float(v) for v in predictor.input_spec.std],
      "normalization": "(pixels - input_mean) / input_std, per channel, on the 0..255 scale",
      "decode": ("tf.io.decode_image; greyscale to RGB, alpha composited onto white; EXIF "
                 "orientation NOT applied"),
      "serving_platforms": list(platforms),
      "signatures": {
          "serving_default": {"inputs": {"images": "uint8 [batch, H, W, 3]"},
                              "outputs": ["probabilities", "logits", "class_index",
                                          "class_name"]},
          "predict_bytes": {"inputs": {"image_bytes": "string [batch]"},
                            "outputs": ["probabilities", "logits", "class_index",
                                        "class_name"]},
          "metadata": {"inputs": {}, "outputs": ["class_names", "conventions"]},
      },
  }
  if tflite:
    conventions["tflite"] = {
        "file": TFLITE_FILE, "signature": "serving_default",
        "note": ("float32; the inputs and outputs of serving_default; resize the input "
                 "tensor to [batch, H, W, 3] before allocate_tensors")}
  return conventions


def convert_to_tflite(saved_model_dir: str, path: str) -> tuple[int, bool]:
  """Converts the ``serving_default`` signature to a float32 TFLite file.

  The converter legalises jax2tf's `XlaCallModule` (StableHLO) to TFLite builtins, and the
  preprocessing uses builtins only, so the carjax models need no TensorFlow ops; should a
  model ever need some, it is converted again with "select TF ops" (the Flex delegate, which
  the full TensorFlow pip package bundles but a bare LiteRT runtime does not).

  Returns:
    (size in bytes, whether select TF ops were needed).
  """
  def convert(ops):
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=["serving_default"])
    converter.target_spec.supported_ops = ops
    return converter.convert()

  select_tf_ops = False
  try:
    flatbuffer = convert([tf.lite.OpsSet.TFLITE_BUILTINS])
  except Exception as e:  # pylint: disable=broad-except  # The converter's errors vary.
    logging.warning("TFLite builtins are not enough (%s); converting with select TF ops.",
                    str(e).splitlines()[-1] if str(e) else type(e).__name__)
    flatbuffer = convert([tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS])
    select_tf_ops = True
  with open(path, "wb") as f:
    f.write(flatbuffer)
  return len(flatbuffer), select_tf_ops


def export_model(workdir: str, output: str, which: str = ckpt.BEST, *, tflite: bool = False,
                 platforms: Sequence[str] = ("cpu",), overwrite: bool = False,
                 predictor: inference.Predictor | None = None) -> ExportResult:
  """Writes ``<output>/saved_model/``, ``class_names.txt``, ``conventions.json`` (and
  ``model.tflite``) for the `which` checkpoint of a training workdir.

  `platforms`: where the SavedModel may run ('cpu', 'cuda', 'rocm', 'tpu'); the StableHLO is
  lowered for each. TFLite ignores it.
  """
  if predictor is None:
    predictor = inference.Predictor(workdir, which)
  output = os.path.abspath(output)
  if os.path.exists(output) and os.listdir(output):
    if not overwrite:
      raise FileExistsError(f"{output} exists and is not empty; pass overwrite=True "
                            f"(--overwrite) to replace it")
    if not os.path.exists(os.path.join(output, CONVENTIONS_FILE)):
      raise FileExistsError(f"{output} is not empty and holds no earlier export "
                            f"({CONVENTIONS_FILE}); refusing to delete it")
    shutil.rmtree(output)
  os.makedirs(output, exist_ok=True)
  conventions = conventions_for(predictor, workdir, which, platforms, tflite)
  names_path = os.path.join(output, CLASS_NAMES_FILE)
  with open(names_path, "w", encoding="utf-8") as f:
    f.write("".join(f"{name}\n" for name in predictor.class_names))
  conventions_path = os.path.join(output, CONVENTIONS_FILE)
  with open(conventions_path, "w", encoding="utf-8") as f:
    json.dump(conventions, f, indent=2, sort_keys=True)

  module = CarjaxServingModule(predictor, conventions, platforms=platforms,
                               asset_paths=(names_path, conventions_path))
  saved_model_dir = os.path.join(output, SAVED_MODEL_DIR)
  # Written beside, then moved: a half-written export never looks like a finished one.
  with tempfile.TemporaryDirectory(dir=output) as tmp:
    staging = os.path.join(tmp, SAVED_MODEL_DIR)
    tf.saved_model.save(module, staging, signatures={
        "serving_default": module.predict_images,
        "predict_bytes": module.predict_bytes,
        "metadata": module.metadata,
    })
    os.replace(staging, saved_model_dir)

  tflite_path = tflite_bytes = select_tf_ops = None
  if tflite:
    tflite_path = os.path.join(output, TFLITE_FILE)
    tflite_bytes, select_tf_ops = convert_to_tflite(saved_model_dir, tflite_path)
    logging.info("TFLite model written to %s (%.2f MB%s)", tflite_path, tflite_bytes / 1e6,
                 ", needs select TF ops" if select_tf_ops else ", builtin ops only")
  return ExportResult(output, saved_model_dir, tflite_path, tflite_bytes, select_tf_ops,
                      conventions)


def read_class_names(saved_model_dir: str) -> list[str]:
  """The class names stored in an exported SavedModel's assets."""
  with open(os.path.join(saved_model_dir, "assets", CLASS_NAMES_FILE), encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f]

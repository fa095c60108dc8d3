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

The preprocessing around the model (decoding, Pillow-exact resizing) is
`carjax.export.tf_preprocess`; ``predict_bytes`` does NOT apply EXIF orientation: rotate phone
photos before sending them, or decode them yourself and use ``serving_default``.
"""

from __future__ import annotations

import dataclasses
import datetime
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
# Before jax2tf: TensorFlow must not see GPUs. tf_preprocess imports it through
# carjax.tensorflow_setup, which hides them; this module uses that same import.
from carjax.export.tf_preprocess import tf
from jax.experimental import jax2tf

from carjax import inference
from carjax import models
from carjax import checkpoint as ckpt
from carjax.export.tf_preprocess import (decode_image, pillow_resamples_vertically_first,
                                         resize_images)
from carjax.models import tta

SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
CLASS_NAMES_FILE = "class_names.txt"
CONVENTIONS_FILE = "conventions.json"
EXPORT_FORMAT = "carjax-tf-export/1"


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

r"""Exports a trained model as a TensorFlow SavedModel (and TFLite) with preprocessing inside.

  python -m launch.export --workdir=runs/custom_cnn --output=exported/custom_cnn
  python -m launch.export --workdir=runs/lite0 --checkpoint=last --output=out/lite0 --tflite \
      --platforms=cpu,cuda

Writes <output>/saved_model/ (signatures serving_default: uint8 images [batch, H, W, 3];
predict_bytes: encoded JPEG/PNG [batch]; metadata), class_names.txt, conventions.json and,
with --tflite, model.tflite. See carjax/export/saved_model.py.
"""

import os

from absl import app
from absl import flags
from absl import logging

from carjax import cli
from carjax import jsonio
from carjax import logging_setup

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Which checkpoint.")
_OUTPUT = flags.DEFINE_string("output", None, "Output folder (created; must be empty).")
_TFLITE = flags.DEFINE_bool("tflite", False, "Also write a float32 model.tflite.")
_PLATFORMS = flags.DEFINE_list("platforms", ["cpu"],
                               "Where the SavedModel may run: cpu, cuda, rocm, tpu.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a non-empty --output folder.")
flags.mark_flags_as_required(["workdir", "output"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging_setup.setup()
  # TensorFlow's C++ start-up chatter (CPU features, oneDNN) is not for the user; its warnings are.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  # Needs the export extra.
  from carjax.export import saved_model  # pylint: disable=g-import-not-at-top
  result = saved_model.export_model(_WORKDIR.value, _OUTPUT.value, _CHECKPOINT.value,
                                    tflite=_TFLITE.value, platforms=tuple(_PLATFORMS.value),
                                    overwrite=_OVERWRITE.value)
  logging.info("SavedModel written to %s", result.saved_model_dir)
  summary = {"saved_model": result.saved_model_dir,
             "tflite": result.tflite_path, "tflite_bytes": result.tflite_bytes,
             "image_size": result.conventions["image_size"],
             "resize_mode": result.conventions["resize_mode"],
             "num_classes": result.conventions["num_classes"],
             "checkpoint_step": result.conventions["source"]["step"]}
  print(jsonio.dumps(summary, indent=2))


if __name__ == "__main__":
  cli.run(main)

r"""Top-k makes for images: a file, a folder (recursive) or a glob.

  python -m launch.predict --workdir=runs/lite0 --input=photo.jpg
  python -m launch.predict --workdir=runs/lite0 --input='photos/*.jpg' --format=json --top_k=5
  python -m launch.predict --workdir=runs/lite0 --input=photo.jpg --gradcam=out/gradcam

Prints only the results on stdout (libraries' INFO logs are off; --verbosity=0 shows them).
Photos are decoded with their EXIF orientation applied.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from carjax import cli
from carjax import inference
from carjax import logging_setup
from carjax import prediction_output

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Which checkpoint.")
_INPUT = flags.DEFINE_multi_string("input", None, "Image file, folder or glob (repeatable).")
_TOP_K = flags.DEFINE_integer("top_k", 3, "How many makes per image.", lower_bound=1)
_FORMAT = flags.DEFINE_enum("format", "table", ["table", "json", "csv"], "Output format.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Images per forward pass.", lower_bound=1)
_GRADCAM = flags.DEFINE_string(
    "gradcam", None, "Also write each image's Grad-CAM overlay (evidence for the predicted "
    "make, red = strong) to this folder as <name>_gradcam.png.")
_GRADCAM_LAYER = flags.DEFINE_string(
    "gradcam_layer", None, "Submodule whose output Grad-CAM reads (e.g. stage3, blocks_12); "
    "default: the custom CNN's last stage, EfficientNet's last map.")
flags.mark_flags_as_required(["workdir", "input"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging_setup.setup(logging.WARNING)  # Results only, unless asked otherwise.
  files = inference.expand_inputs(_INPUT.value)
  if not files:
    raise app.UsageError(f"No image files found in {_INPUT.value}")
  predictor = inference.Predictor(_WORKDIR.value, _CHECKPOINT.value)
  results, failures = predictor.predict_files(files, _TOP_K.value, _BATCH.value)
  print(prediction_output.render(results, failures, _FORMAT.value), end="")
  if _GRADCAM.value and results:
    from carjax import explain  # pylint: disable=g-import-not-at-top
    written = explain.write_overlays(predictor, [r["file"] for r in results], _GRADCAM.value,
                                     _GRADCAM_LAYER.value)
    # On stderr: stdout stays the requested format (json/csv can be piped).
    print(f"Grad-CAM overlays: {len(written)} in {_GRADCAM.value}", file=sys.stderr)
  if failures and not results:
    raise SystemExit(1)


if __name__ == "__main__":
  cli.run(main)

r"""Builds cars20 (or a similar make-labelled image folder) from Stanford Cars.

  python -m launch.prepare_data --download=kaggle --output=data/cars20
  python -m launch.prepare_data --input=~/Downloads/stanford-cars --output=data/cars20
  python -m launch.prepare_data --input=DIR --images=recipe --num_makes=30 --output=data/cars30

Then train on it with --config.data.source=folder:data/cars20. --images=cars20 (default)
writes the reference set's own train and val images, found by Stanford file id
(carjax/data/cars20.py); --images=recipe selects and splits anew with the cars20 recipe
(carjax/data/stanford_cars/recipe.py). Mirrors: carjax/data/download.py. Run without --input or
--download to see where to get the data.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

from carjax import cli
from carjax import logging_setup
from carjax.data import cars20
from carjax.data import download
from carjax.data.stanford_cars import layouts
from carjax.data.stanford_cars import recipe

_LAYOUT = flags.DEFINE_enum("layout", "auto", layouts.LAYOUTS,
                            "Download layout; 'auto' detects it from the files.")
_INPUT = flags.DEFINE_string("input", None, "The downloaded (unpacked) Stanford Cars folder.")
_DOWNLOAD = flags.DEFINE_string(
    "download", None, "Download Stanford Cars first from this public mirror: 'kaggle' (keeps "
    "Stanford's ids and boxes) or 'huggingface:OWNER/NAME'. Needs the prepare extra.")
_DOWNLOAD_DIR = flags.DEFINE_string("download_dir", None,
                                    "Where to keep the download (default: the client's cache).")
_IMAGES = flags.DEFINE_enum(
    "images", "cars20", ["cars20", "recipe"],
    "cars20: the reference set's own images, by Stanford id; recipe: select and split anew "
    "(--num_makes, --seed, ...).")
_OUTPUT = flags.DEFINE_string("output", None, "New or empty folder to write the images to.")
_NUM_MAKES = flags.DEFINE_integer("num_makes", 20, "Keep the makes with the most images.")
_MIN_PER_MAKE = flags.DEFINE_integer("min_images_per_make", 100,
                                     "Drop makes with fewer images than this.")
_MAX_PER_MAKE = flags.DEFINE_integer("max_images_per_make", 400,
                                     "Cap per make, spread over the make's models.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the per-make cap and of the split.")
_VAL_FRACTION = flags.DEFINE_float("val_fraction", 0.15, "Share of each model class for val.")
_TEST_FRACTION = flags.DEFINE_float("test_fraction", 0.15,
                                    "Share of each model class for test.")
_HALVES = flags.DEFINE_list("stanford_halves", ["train"],
                            "Stanford halves to use: train (as cars20), test, or both.")
_MAX_SHORT_SIDE = flags.DEFINE_integer("max_short_side", 256,
                                       "Shrink crops to this short side; 0 keeps them.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging_setup.setup()
  if _INPUT.value and _DOWNLOAD.value:
    raise app.UsageError("Give --input or --download, not both.")
  if not _INPUT.value and not _DOWNLOAD.value:
    print(layouts.INSTRUCTIONS.format(where=" (no --input or --download given)"),
          file=sys.stderr)
    return 2
  if not _OUTPUT.value:
    raise app.UsageError("--output is required: a new or empty folder.")
  input_dir = _INPUT.value
  if _DOWNLOAD.value:
    try:  # Before a long download: the output must be new or empty.
      recipe.check_output_dir(os.path.abspath(os.path.expanduser(_OUTPUT.value)))
    except FileExistsError as e:
      print(e, file=sys.stderr)
      return 2
    input_dir = download.download(_DOWNLOAD.value, _DOWNLOAD_DIR.value)
    print(f"Stanford Cars from {_DOWNLOAD.value}: {input_dir}")
  try:
    if _IMAGES.value == "cars20":
      summary = cars20.build(input_dir, _OUTPUT.value, layout=_LAYOUT.value,
                             max_short_side=_MAX_SHORT_SIDE.value)
    else:
      summary = recipe.prepare(
          input_dir, _OUTPUT.value, layout=_LAYOUT.value, halves=_HALVES.value,
          num_makes=_NUM_MAKES.value, min_images_per_make=_MIN_PER_MAKE.value,
          max_images_per_make=_MAX_PER_MAKE.value, seed=_SEED.value,
          val_fraction=_VAL_FRACTION.value, test_fraction=_TEST_FRACTION.value,
          max_short_side=_MAX_SHORT_SIDE.value)
  except (layouts.NoStanfordCarsError, FileExistsError, ValueError) as e:
    print(e, file=sys.stderr)
    return 2
  logging.info("%s", summary.describe())
  print(summary.describe())
  return 0


if __name__ == "__main__":
  cli.run(main)

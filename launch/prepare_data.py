r"""Builds a make-labelled image folder (like cars20) from a Stanford Cars download.

  python -m launch.prepare_data --input=~/Downloads/stanford-cars --output=data/cars20_full

Then train on it with --config.data.source=folder:data/cars20_full. Run without --input
to see where to get the data. Recipe and layouts: carjax/data/prepare.py.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from carjax import cli
from carjax import logging_setup
from carjax.data import prepare

_LAYOUT = flags.DEFINE_enum("layout", "auto", prepare.LAYOUTS,
                            "Download layout; 'auto' detects it from the files.")
_INPUT = flags.DEFINE_string("input", None, "The downloaded (unpacked) Stanford Cars folder.")
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
  if not _INPUT.value:
    print(prepare.INSTRUCTIONS.format(where=" (no --input given)"), file=sys.stderr)
    return 2
  if not _OUTPUT.value:
    raise app.UsageError("--output is required: a new or empty folder.")
  try:
    summary = prepare.prepare(
        _INPUT.value, _OUTPUT.value, layout=_LAYOUT.value, halves=_HALVES.value,
        num_makes=_NUM_MAKES.value, min_images_per_make=_MIN_PER_MAKE.value,
        max_images_per_make=_MAX_PER_MAKE.value, seed=_SEED.value,
        val_fraction=_VAL_FRACTION.value, test_fraction=_TEST_FRACTION.value,
        max_short_side=_MAX_SHORT_SIDE.value)
  except (prepare.NoStanfordCarsError, FileExistsError) as e:
    print(e, file=sys.stderr)
    return 2
  logging.info("%s", summary.describe())
  print(summary.describe())
  return 0


if __name__ == "__main__":
  cli.run(main)

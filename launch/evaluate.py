r"""Evaluates a workdir's best (or last) checkpoint on a split or on any image folder.

  python -m launch.evaluate --workdir=runs/custom_cnn --split=val
  python -m launch.evaluate --workdir=runs/custom_cnn --split=dev --flip_tta
  python -m launch.evaluate --workdir=runs/custom_cnn --folder=/photos/by_make --output=out/
  python -m launch.evaluate --workdir=runs/lite0_s0,runs/lite0_s1 --split=val --output=out/ens

Writes metrics.json, per_class.csv, confusion_matrix.{csv,png} and predictions.csv.
"""


from absl import app
from absl import flags
from carjax import cli
from carjax import jsonio
from carjax import logging_setup

from carjax import evaluation

_WORKDIR = flags.DEFINE_list(
    "workdir", None, "A training workdir; several, comma-separated, evaluate their ensemble "
    "(the mean of their probabilities), written to --output.")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Which checkpoint.")
_SPLIT = flags.DEFINE_string("split", None, "A split of the run's data (default: its eval split).")
_FOLDER = flags.DEFINE_string("folder", None, "An image folder of the same classes instead.")
_OUTPUT = flags.DEFINE_string("output", None, "Output folder (default: inside the workdir).")
_IMAGE_SIZE = flags.DEFINE_list(
    "image_size", None, "Classify at HEIGHT,WIDTH (or S) instead of the run's own size; "
    "results go to an *_<h>x<w> folder.")
_FLIP_TTA = flags.DEFINE_bool(
    "flip_tta", None, "Average each photo's prediction with its mirror's (default: as the "
    "run's config.eval.flip_tta); a setting other than the run's writes to a *_flip or "
    "*_noflip folder.")
_EMA = flags.DEFINE_bool(
    "ema", None, "Classify with the weight average (default: when the run keeps one, "
    "config.train.ema_decay > 0); --noema uses the raw weights and writes to a *_raw folder.")
flags.mark_flags_as_required(["workdir"])


def _image_size():
  if not _IMAGE_SIZE.value:
    return None
  try:
    return tuple(int(v) for v in _IMAGE_SIZE.value)
  except ValueError:
    raise app.UsageError(f"--image_size takes HEIGHT,WIDTH or S in pixels, got "
                         f"{','.join(_IMAGE_SIZE.value)!r}") from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir names no run.")
  if _SPLIT.value and _FOLDER.value:
    raise app.UsageError("Give --split or --folder, not both.")
  settings = dict(split=_SPLIT.value, folder=_FOLDER.value, flip_tta=_FLIP_TTA.value,
                  image_size=_image_size(), use_ema=_EMA.value)
  logging_setup.setup()
  if len(_WORKDIR.value) > 1:
    if not _OUTPUT.value:
      raise app.UsageError("An ensemble (several --workdir) belongs to no one run: give "
                           "--output=FOLDER for its evaluation files.")
    summary = evaluation.evaluate_ensemble(_WORKDIR.value, _OUTPUT.value, _CHECKPOINT.value,
                                           **settings)
  else:
    summary = evaluation.evaluate_workdir(_WORKDIR.value[0], _CHECKPOINT.value,
                                          output_dir=_OUTPUT.value, **settings)
  print(jsonio.dumps(summary, indent=2))


if __name__ == "__main__":
  cli.run(main)

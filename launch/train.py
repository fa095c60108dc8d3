r"""Trains and evaluates a model.

  python -m launch.train --config=configs/custom_cnn.py \
      --config.data.source=folder:../shared/data/cars20 --workdir=runs/custom_cnn

Run the same command again after an interruption and it resumes from the last checkpoint.
"""

from absl import app
from absl import flags
from absl import logging  # pylint: disable=unused-import
from carjax import cli
from carjax import logging_setup
from ml_collections import config_flags

from carjax.train import loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging_setup.setup()
  loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  cli.run(main)

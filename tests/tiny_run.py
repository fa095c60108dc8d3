"""A tiny trained run for the application tests (predict, demo): the tiny CNN trained for real
on the synthetic folder of tests.conftest, in seconds."""

from __future__ import annotations

import pathlib

from configs import custom_cnn
from tests import helpers
from tests.conftest import write_synthetic_folder


def train_tiny_run(root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  """(workdir, data folder): tiny_cnn trained 3 epochs on 3 colour-coded classes."""
  data = write_synthetic_folder(root / "cars", per_split=(("train", 12), ("val", 4)),
                                size=(48, 36))
  config = custom_cnn.get_config("tiny")
  config.data.source = f"folder:{data}"
  config.train.num_epochs = 3
  workdir = root / "run"
  helpers.train_and_evaluate(config, str(workdir))
  return workdir, data

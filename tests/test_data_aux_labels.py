"""carjax/data/aux_labels.py: a labels CSV gives every training image its auxiliary label,
matched by the path relative to the image folder; a training image without one is refused in
one line naming it, other splits need none."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from carjax.data import aux_labels
from carjax.data import loading
from carjax.data import sources
from carjax.errors import ConfigError, DataError
from carjax.train import validate
from tests import helpers
from tests.conftest import write_synthetic_folder


def _model_of(relpath: str) -> str:
  """A made-up car model per image: its make plus the parity of its number."""
  make = relpath.split("/")[1]
  number = int(os.path.splitext(relpath)[0].rsplit("_", 1)[1])
  return f"{make} {'Coupe' if number % 2 else 'Sedan'}"


def _write_manifest(path, relpaths, extra_columns=("make",)) -> str:
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(("split",) + tuple(extra_columns) + ("relpath", "model"))
    for rel in relpaths:
      writer.writerow((rel.split("/")[0],) + tuple(rel.split("/")[1] for _ in extra_columns)
                      + (rel, _model_of(rel)))
  return str(path)


def _relpaths(source, split):
  return [os.path.relpath(r.name, source.root).replace(os.sep, "/")
          for r in source.records(split)]


@pytest.fixture
def folder_and_source(tmp_path):
  folder = write_synthetic_folder(tmp_path / "cars", per_split=(("train", 3), ("val", 2)))
  return folder, sources.ImageFolderSource(folder)


def test_labels_follow_the_csv_by_relative_path(folder_and_source, tmp_path):
  folder, source = folder_and_source
  train = _relpaths(source, "train")
  # Only the training images are listed: val needs no auxiliary label.
  config = helpers.tiny_cnn_config(folder)
  config.data.aux_labels_csv = _write_manifest(tmp_path / "manifest.csv", reversed(train))
  aux = aux_labels.for_train_split(config.data, source)
  expected_names = sorted({_model_of(r) for r in train})
  assert aux.class_names == tuple(expected_names) and len(expected_names) == 6

  data = loading.load_data(config, source)
  assert data.aux_class_names == aux.class_names
  names = [os.path.relpath(n, source.root).replace(os.sep, "/") for n in data.train.names]
  assert len(names) == 9
  np.testing.assert_array_equal(
      data.train_aux_labels, [expected_names.index(_model_of(n)) for n in names])
  assert data.train_aux_labels.dtype == np.int32
  # The make of each image and its model's make agree: the labels are aligned, not shuffled.
  for make_label, aux_label in zip(data.train.labels, data.train_aux_labels):
    assert aux.class_names[aux_label].startswith(data.class_names[make_label])


def test_a_training_image_without_a_label_is_named_in_one_line(folder_and_source, tmp_path):
  folder, source = folder_and_source
  train = _relpaths(source, "train")
  config = helpers.tiny_cnn_config(folder)
  csv_path = _write_manifest(tmp_path / "manifest.csv", train[:4] + train[5:])
  config.data.aux_labels_csv = csv_path
  with pytest.raises(DataError) as error:
    aux_labels.for_train_split(config.data, source)
  message = str(error.value)
  assert "\n" not in message
  assert csv_path in message and "'model'" in message and repr(train[4]) in message


def test_missing_column_and_non_folder_sources_are_config_errors(folder_and_source, tmp_path):
  folder, source = folder_and_source
  config = helpers.tiny_cnn_config(folder)
  config.data.aux_labels_csv = _write_manifest(tmp_path / "manifest.csv",
                                               _relpaths(source, "train"))
  config.data.aux_labels_column = "trim"
  with pytest.raises(ConfigError, match=r"aux_labels_column='trim' is not a column .*"
                                        r"relpath, model"):
    aux_labels.for_train_split(config.data, source)
  config.data.aux_labels_column = "model"
  config.data.source = "tfds:cars196"
  with pytest.raises(ConfigError, match="aux_labels_csv needs an image-folder source"):
    validate.validate_config(config)
  config.data.aux_labels_csv = str(tmp_path / "absent.csv")
  with pytest.raises(ConfigError, match="absent.csv' is not a file"):
    validate.validate_config(config)


def test_two_labels_for_one_image_are_refused(tmp_path):
  path = tmp_path / "labels.csv"
  path.write_text("relpath,model\ntrain/A/x.jpg,one\n./train/A/x.jpg,two\n")
  with pytest.raises(DataError, match="'train/A/x.jpg' has two 'model' labels"):
    aux_labels.read_label_table(str(path), "relpath", "model")

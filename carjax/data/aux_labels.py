"""A second label for every training image, read from a labels CSV (the auxiliary head's).

`config.data.aux_labels_csv` names a CSV with a header: the column `config.data.
aux_labels_key` names each image by its path relative to the image folder's root
('train/Acura/stanford_train_00069.jpg', '/'-separated), the column `config.data.
aux_labels_column` holds its auxiliary label (cars20's `MANIFEST.csv`: `relpath` and the car
`model` beside the make). `for_train_split` reads it once, before any image is decoded, and
checks that every image of the train split has a label; images of other splits need none
(only training uses the auxiliary head). The auxiliary classes are the sorted labels of the
train split's images, so the head has no output that nothing trains.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Sequence

import ml_collections
import numpy as np

from carjax.data import sources
from carjax.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class AuxLabels:
  """The auxiliary classes (sorted) and the class index of every train-split record name."""

  class_names: tuple[str, ...]
  index_of_name: dict[str, int]

  def labels_of(self, names: Sequence[str]) -> np.ndarray:
    """int32 [N]: the auxiliary label of each record name (a decoded split's `names`)."""
    missing = [n for n in names if n not in self.index_of_name]
    if missing:
      raise DataError(f"no auxiliary label for the training image {missing[0]} "
                      f"({len(missing)} without one)")
    return np.array([self.index_of_name[n] for n in names], np.int32)


def _key(path: str) -> str:
  """A relative image path as the CSV and the folder listing compare it."""
  key = path.strip().replace("\\", "/")
  while key.startswith("./"):
    key = key[2:]
  return key


def check_options(data_cfg: ml_collections.ConfigDict) -> None:
  """Refuses (ConfigError) a labels CSV that is not a file, key and label columns that are
  not two named columns, and a TFDS source: all before any data is read."""
  csv_path = data_cfg.aux_labels_csv
  if not isinstance(csv_path, str) or not os.path.isfile(os.path.expanduser(csv_path)):
    raise ConfigError(f"config.data.aux_labels_csv={csv_path!r} is not a file")
  for name in ("aux_labels_key", "aux_labels_column"):
    if not isinstance(data_cfg[name], str) or not data_cfg[name]:
      raise ConfigError(f"config.data.{name} must name a column of "
                        f"config.data.aux_labels_csv, got {data_cfg[name]!r}")
  if data_cfg.aux_labels_key == data_cfg.aux_labels_column:
    raise ConfigError(f"config.data.aux_labels_key and config.data.aux_labels_column are "
                      f"both {data_cfg.aux_labels_key!r}: the image path and its label are "
                      "two columns")
  if isinstance(data_cfg.source, str) and data_cfg.source.strip().startswith("tfds:"):
    raise _needs_folder_source(data_cfg)


def _needs_folder_source(data_cfg) -> ConfigError:
  return ConfigError(f"config.data.aux_labels_csv needs an image-folder source "
                     f"(config.data.source=folder:PATH), not {data_cfg.source!r}")


def read_label_table(csv_path: str, key_column: str, label_column: str) -> dict[str, str]:
  """{relative image path: label} of a labels CSV; rows with an empty label are left out.

  Raises ConfigError for a missing file or column, DataError for a path given two labels.
  """
  path = os.path.expanduser(csv_path)
  if not os.path.isfile(path):
    raise ConfigError(f"config.data.aux_labels_csv={csv_path!r} is not a file")
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    columns = reader.fieldnames or []
    for option, column in (("aux_labels_key", key_column), ("aux_labels_column", label_column)):
      if column not in columns:
        raise ConfigError(f"config.data.{option}={column!r} is not a column of {csv_path} "
                          f"(its columns: {', '.join(columns) or 'none'})")
    table: dict[str, str] = {}
    for row in reader:
      key, label = _key(row[key_column] or ""), (row[label_column] or "").strip()
      if not key or not label:
        continue
      if table.setdefault(key, label) != label:
        raise DataError(f"{csv_path}: the image {key!r} has two {label_column!r} labels, "
                        f"{table[key]!r} and {label!r}")
  return table


def for_train_split(data_cfg: ml_collections.ConfigDict, source) -> AuxLabels | None:
  """The auxiliary labels of `source`'s train split (None when `config.data.aux_labels_csv`
  is empty). Raises a one-line DataError naming the CSV, the column and the first training
  image without a label, and ConfigError for a source that is not an image folder."""
  csv_path = data_cfg.get("aux_labels_csv", "")
  if not csv_path:
    return None
  check_options(data_cfg)
  if not isinstance(getattr(source, "base", source), sources.ImageFolderSource):
    raise _needs_folder_source(data_cfg)
  key_column, label_column = data_cfg.aux_labels_key, data_cfg.aux_labels_column
  table = read_label_table(csv_path, key_column, label_column)
  labels_of_name = {}
  for record in source.records(data_cfg.train_split):
    key = _key(os.path.relpath(record.name, source.root))
    if key not in table:
      raise DataError(f"{csv_path} has no {label_column!r} label for the training image "
                      f"{key!r} (looked up in its column {key_column!r}); every training "
                      "image needs one (config.data.aux_labels_csv)")
    labels_of_name[record.name] = table[key]
  class_names = tuple(sorted(set(labels_of_name.values())))
  if len(class_names) < 2:
    raise DataError(f"{csv_path}: the training images have {len(class_names)} distinct "
                    f"{label_column!r} label: an auxiliary head needs at least two")
  index = {name: i for i, name in enumerate(class_names)}
  return AuxLabels(class_names, {n: index[label] for n, label in labels_of_name.items()})

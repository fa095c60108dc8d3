"""Finding and reading a Stanford Cars download, in whichever layout it came.

Stanford Cars' own URLs are dead; people get it today as one of:

* ``kaggle``: the Kaggle mirror "stanford-car-dataset-by-classes-folder":
  ``car_data/car_data/{train,test}/<Class Name>/<file>.jpg`` next to
  ``anno_train.csv`` / ``anno_test.csv`` (file, x1, y1, x2, y2, class id; no
  header) and ``names.csv`` (the 196 class names, one per line).
* ``huggingface``: a Hugging Face mirror as parquet files with an ``image``
  column ({bytes, path}) and an integer ``label``; class names from the
  parquet's embedded Hugging Face metadata, ``dataset_info(s).json`` or the
  dataset card (README.md). These mirrors have no bounding boxes, so their
  images stay uncropped.
* ``devkit``: the original release: ``devkit/cars_meta.mat``,
  ``devkit/cars_train_annos.mat`` (bbox_x1, bbox_y1, bbox_x2, bbox_y2, class,
  fname) with images in ``cars_train/`` (and for the test half
  ``cars_test_annos_withlabels.mat`` with ``cars_test/``), or the combined
  ``cars_annos.mat`` with ``car_ims/``.

Each reader returns the download's annotated images as `SourceImage`s (not yet read) and the
number of annotated files that are missing.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from typing import Callable, Sequence

from absl import logging
import numpy as np

from carjax import extras
from carjax.data.splits import TEST, TRAIN
from carjax.data.stanford_cars.makes import clean_class_name

LAYOUTS = ("auto", "kaggle", "huggingface", "devkit")
# How deep below --input the layouts' marker files are searched for.
_SEARCH_DEPTH = 4

INSTRUCTIONS = """\
No Stanford Cars download was found{where}. The simplest is to let this command
download it (public Kaggle mirror, needs `pip install -e ".[prepare]"`):

  python -m launch.prepare_data --download=kaggle --output=data/cars20

Or get it yourself in one of these forms, then run this again with --input pointing
at the downloaded (and unpacked) folder:

  kaggle       https://www.kaggle.com/datasets/jutrera/stanford-car-dataset-by-classes-folder
               (unzip it: car_data/car_data/{{train,test}}/..., anno_train.csv,
               anno_test.csv, names.csv)
  huggingface  a Stanford Cars mirror stored as parquet, e.g.
               `huggingface-cli download --repo-type dataset tanganke/stanford_cars
               --local-dir DIR` (images are not cropped: no bounding boxes)
  devkit       the original release: car_devkit.tgz (devkit/cars_meta.mat,
               devkit/cars_train_annos.mat) and cars_train.tgz (cars_train/), both
               unpacked into DIR (the ai.stanford.edu links are dead; use a mirror)

  python -m launch.prepare_data --input=DIR --output=OUT [--layout=auto]

and train on it with config.data.source='folder:OUT'.
"""


class NoStanfordCarsError(FileNotFoundError):
  """The input folder holds no recognised Stanford Cars layout."""


@dataclasses.dataclass
class SourceImage:
  """One annotated image of the download, not yet read.

  Attributes:
    name: where it comes from (a path, or "file.parquet#row"), for messages.
    half: the Stanford half it belongs to, "train" or "test".
    class_id: the Stanford class id, 1-based.
    model: the Stanford class name, e.g. "Audi S4 Sedan 2012".
    bbox: (x1, y1, x2, y2), 1-based inclusive pixel coordinates as in the
      devkit, or None when the download has no boxes.
    output_stem: the output file name without extension.
    read: returns the encoded image bytes.
  """

  name: str
  half: str
  class_id: int
  model: str
  bbox: tuple[int, int, int, int] | None
  output_stem: str
  read: Callable[[], bytes]


def _walk_limited(root: str, max_depth: int = _SEARCH_DEPTH):
  """os.walk that stops `max_depth` folders below root."""
  root_depth = root.rstrip(os.sep).count(os.sep)
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    if dirpath.count(os.sep) - root_depth >= max_depth:
      dirnames[:] = []
    yield dirpath, dirnames, sorted(filenames)


def _find_file(root: str, filename: str) -> str | None:
  for dirpath, _, filenames in _walk_limited(root):
    if filename in filenames:
      return os.path.join(dirpath, filename)
  return None


def _find_dir(root: str, dirname: str) -> str | None:
  for dirpath, dirnames, _ in _walk_limited(root):
    if dirname in dirnames:
      return os.path.join(dirpath, dirname)
  return None


def _file_reader(path: str) -> Callable[[], bytes]:
  def read() -> bytes:
    with open(path, "rb") as f:
      return f.read()
  return read


def detect_layout(input_dir: str) -> str:
  """'kaggle', 'devkit' or 'huggingface', from the files found under input."""
  if _find_file(input_dir, "anno_train.csv") or _find_file(
      input_dir, "anno_test.csv"):
    return "kaggle"
  if (_find_file(input_dir, "cars_train_annos.mat") or
      _find_file(input_dir, "cars_annos.mat")):
    return "devkit"
  for _, _, filenames in _walk_limited(input_dir):
    if any(f.endswith(".parquet") for f in filenames):
      return "huggingface"
  raise NoStanfordCarsError(INSTRUCTIONS.format(where=f" in {input_dir}"))


def _int_or_none(text: str) -> int | None:
  try:
    return int(round(float(text)))
  except ValueError:
    return None


def read_kaggle(input_dir: str, halves: Sequence[str]
                ) -> tuple[list[SourceImage], int]:
  """Reads the Kaggle mirror. Returns (images, annotated-but-missing count)."""
  names_path = _find_file(input_dir, "names.csv")
  class_names: list[str] | None = None
  if names_path:
    with open(names_path, encoding="utf-8-sig") as f:
      class_names = [clean_class_name(line) for line in f if line.strip()]

  images, missing = [], 0
  for half in halves:
    anno_path = _find_file(input_dir, f"anno_{half}.csv")
    if anno_path is None:
      raise NoStanfordCarsError(
          f"Kaggle layout: anno_{half}.csv not found under {input_dir}.")
    # The images sit in <...>/<half>/<Class Name>/<file>; index them by name.
    paths_by_file: dict[str, str] = {}
    class_folder_of: dict[str, str] = {}
    for dirpath, _, filenames in os.walk(os.path.dirname(anno_path)):
      parts = dirpath.split(os.sep)
      if len(parts) >= 2 and parts[-2] == half:
        for filename in filenames:
          paths_by_file[filename] = os.path.join(dirpath, filename)
          class_folder_of[filename] = parts[-1]
    with open(anno_path, newline="", encoding="utf-8-sig") as f:
      for row in csv.reader(f):
        if len(row) < 6 or _int_or_none(row[1]) is None:
          continue  # A header line or a blank line.
        filename = row[0].strip()
        x1, y1, x2, y2, class_id = (_int_or_none(v) for v in row[1:6])
        path = paths_by_file.get(filename)
        if path is None:
          missing += 1
          logging.warning("Kaggle layout: %s (in %s) has no image file.",
                          filename, anno_path)
          continue
        model = (class_names[class_id - 1] if class_names else
                 clean_class_name(class_folder_of[filename]))
        images.append(SourceImage(
            name=path, half=half, class_id=class_id, model=model,
            bbox=(x1, y1, x2, y2),
            output_stem=f"stanford_{half}_{os.path.splitext(filename)[0]}",
            read=_file_reader(path)))
  return images, missing


def _mat_scalar(value) -> int:
  return int(np.asarray(value).ravel()[0])


def _mat_string(value) -> str:
  array = np.asarray(value).ravel()
  return str(array[0]) if array.size else ""


def _load_mat(path: str) -> dict:
  scipy_io = extras.import_optional("scipy.io", "prepare",
                                    "Reading the Stanford devkit's .mat files")
  return scipy_io.loadmat(path, squeeze_me=True, struct_as_record=True)


def _mat_records(mat: dict) -> np.ndarray:
  return np.atleast_1d(mat["annotations"])


def read_devkit(input_dir: str, halves: Sequence[str]
                ) -> tuple[list[SourceImage], int]:
  """Reads the original devkit (.mat annotations) and image folders."""
  combined = _find_file(input_dir, "cars_annos.mat")
  if combined and not _find_file(input_dir, "cars_train_annos.mat"):
    return _read_devkit_combined(combined, halves)
  meta_path = _find_file(input_dir, "cars_meta.mat")
  if meta_path is None:
    raise NoStanfordCarsError(
        f"Devkit layout: cars_meta.mat (the class names) not found under "
        f"{input_dir}; unpack car_devkit.tgz there.")
  class_names = [clean_class_name(str(n)) for n in
                 np.atleast_1d(_load_mat(meta_path)["class_names"])]
  annotation_files = {TRAIN: ("cars_train_annos.mat",),
                      TEST: ("cars_test_annos_withlabels.mat",)}
  found: list[SourceImage | None] = []
  for half in halves:
    anno_path = next(filter(None, (_find_file(input_dir, f)
                                   for f in annotation_files[half])), None)
    image_dir = _find_dir(input_dir, f"cars_{half}")
    if anno_path is None or image_dir is None:
      raise NoStanfordCarsError(
          f"Devkit layout, {half} half: need {annotation_files[half][0]} and "
          f"the cars_{half}/ image folder under {input_dir}.")
    # cars_train/ sometimes unpacks as cars_train/cars_train/.
    nested = os.path.join(image_dir, f"cars_{half}")
    if os.path.isdir(nested):
      image_dir = nested
    for record in _mat_records(_load_mat(anno_path)):
      filename = _mat_string(record["fname"])
      found.append(_devkit_image(record, os.path.join(image_dir, filename), half, class_names,
                                 f"stanford_{half}_{os.path.splitext(filename)[0]}"))
  return _present_and_missing(found)


def _present_and_missing(found: Sequence[SourceImage | None]) -> tuple[list[SourceImage], int]:
  """(the images found, how many annotated files were missing: the Nones)."""
  images = [image for image in found if image is not None]
  return images, len(found) - len(images)


def _devkit_image(record, path: str, half: str, class_names: Sequence[str],
                  output_stem: str) -> SourceImage | None:
  """The image of one devkit annotation record, or None (logged) when its file is missing."""
  if not os.path.exists(path):
    logging.warning("Devkit layout: %s is annotated but missing.", path)
    return None
  class_id = _mat_scalar(record["class"])
  return SourceImage(
      name=path, half=half, class_id=class_id, model=class_names[class_id - 1],
      bbox=tuple(_mat_scalar(record[f"bbox_{c}"]) for c in ("x1", "y1", "x2", "y2")),
      output_stem=output_stem, read=_file_reader(path))


def _read_devkit_combined(anno_path: str, halves: Sequence[str]
                          ) -> tuple[list[SourceImage], int]:
  """cars_annos.mat + car_ims/: both halves in one file, with a test flag."""
  mat = _load_mat(anno_path)
  class_names = [clean_class_name(str(n))
                 for n in np.atleast_1d(mat["class_names"])]
  base = os.path.dirname(anno_path)
  found: list[SourceImage | None] = []
  for record in _mat_records(mat):
    half = TEST if _mat_scalar(record["test"]) else TRAIN
    if half not in halves:
      continue
    relpath = _mat_string(record["relative_im_path"])
    found.append(_devkit_image(
        record, os.path.join(base, relpath), half, class_names,
        f"stanford_all_{os.path.splitext(os.path.basename(relpath))[0]}"))
  return _present_and_missing(found)


def _class_names_from_info(info: dict, label_column: str) -> list[str] | None:
  """Class names from a Hugging Face DatasetInfo dict (any nesting level)."""
  features = info.get("features") or info.get("info", {}).get("features")
  if isinstance(features, dict):
    label = features.get(label_column)
    if isinstance(label, dict) and isinstance(label.get("names"), list):
      return [str(n) for n in label["names"]]
  for value in info.values():  # dataset_infos.json: {config: DatasetInfo}.
    if isinstance(value, dict):
      names = _class_names_from_info(value, label_column)
      if names:
        return names
  return None


def _class_names_from_card(readme_path: str, label_column: str
                           ) -> list[str] | None:
  """Class names from a dataset card's YAML dataset_info (needs PyYAML)."""
  yaml = extras.import_optional("yaml", "prepare", "Reading a Hugging Face dataset card")
  with open(readme_path, encoding="utf-8") as f:
    text = f.read()
  match = re.match(r"^---\s*\n(.*?)\n---", text, re.S)
  if not match:
    return None
  card = yaml.safe_load(match.group(1)) or {}
  infos = card.get("dataset_info")
  for info in infos if isinstance(infos, list) else [infos]:
    for feature in (info or {}).get("features", []):
      if feature.get("name") != label_column:
        continue
      names = (feature.get("dtype") or {}).get("class_label", {}).get("names")
      if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names, key=int)]
      if isinstance(names, list):
        return [str(n) for n in names]
  return None


def read_huggingface(input_dir: str, halves: Sequence[str], *,
                     image_column: str = "image", label_column: str = "label"
                     ) -> tuple[list[SourceImage], int]:
  """Reads parquet files of a Hugging Face mirror (memory-mapped, lazily)."""
  pq = extras.import_optional("pyarrow.parquet", "prepare",
                              "Reading a Hugging Face parquet mirror")
  parquet_files = [os.path.join(d, f) for d, _, files in
                   _walk_limited(input_dir) for f in files
                   if f.endswith(".parquet")]
  if not parquet_files:
    raise NoStanfordCarsError(f"No .parquet files under {input_dir}.")

  class_names = None
  for path in parquet_files:
    metadata = pq.read_schema(path).metadata or {}
    if b"huggingface" in metadata:
      class_names = _class_names_from_info(
          json.loads(metadata[b"huggingface"]), label_column)
      if class_names:
        break
  for info_file in ("dataset_info.json", "dataset_infos.json"):
    info_path = _find_file(input_dir, info_file)
    if class_names is None and info_path:
      with open(info_path, encoding="utf-8") as f:
        class_names = _class_names_from_info(json.load(f), label_column)
  readme = _find_file(input_dir, "README.md")
  if class_names is None and readme:
    class_names = _class_names_from_card(readme, label_column)
  if not class_names:
    raise ValueError(
        f"Hugging Face layout: no class names for column {label_column!r} "
        f"found in the parquet metadata, dataset_info(s).json or README.md "
        f"under {input_dir}.")
  class_names = [clean_class_name(n) for n in class_names]

  images = []
  for path in parquet_files:
    relative = os.path.relpath(path, input_dir).lower()
    half = TEST if re.search(r"(^|[^a-z])test", relative) else TRAIN
    if half not in halves:
      continue
    table = pq.read_table(path, columns=[image_column, label_column],
                          memory_map=True)
    image_structs = table.column(image_column)
    labels = table.column(label_column).to_pylist()
    file_tag = re.sub(r"[^A-Za-z0-9]+", "_",
                      os.path.splitext(os.path.basename(path))[0])
    stored_names = _stored_file_names(image_structs)
    for row, label in enumerate(labels):
      def read(column=image_structs, row=row) -> bytes:
        value = column[row].as_py()
        return value["bytes"] if isinstance(value, dict) else value
      # Mirrors that kept Stanford's file names ("00001.jpg") give the same output name
      # as the Kaggle and devkit layouts, so cars20's id list finds them.
      stanford_id = _STANFORD_FILE_ID.match(os.path.basename(stored_names[row] or ""))
      images.append(SourceImage(
          name=f"{path}#{row}", half=half, class_id=int(label) + 1,
          model=class_names[int(label)], bbox=None,
          output_stem=(f"stanford_{half}_{stanford_id.group(1)}" if stanford_id
                       else f"hf_{file_tag}_{row:05d}"), read=read))
  logging.info("Hugging Face layout: %d images in %d parquet files; no "
               "bounding boxes, images are kept whole.", len(images),
               len(parquet_files))
  return images, 0


_STANFORD_FILE_ID = re.compile(r"^(\d{5})\.jpe?g$", re.IGNORECASE)


def _stored_file_names(image_column) -> list[str | None]:
  """The `path` of each row of a Hugging Face Image column (None where it has none)."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top  # Present: the caller read parquet.
  if not pa.types.is_struct(image_column.type) or image_column.type.get_field_index(
      "path") < 0:
    return [None] * len(image_column)
  return image_column.combine_chunks().field("path").to_pylist()


READERS = {"kaggle": read_kaggle, "devkit": read_devkit,
           "huggingface": read_huggingface}

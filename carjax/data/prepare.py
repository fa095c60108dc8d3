"""Build make-labelled image folders (like cars20) from a Stanford Cars download.

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

`prepare` then applies the cars20 recipe (see ../shared/data/README.md):

1. label each image with its make: the first word of the Stanford class name,
   except the two-word makes AM General, Aston Martin and Land Rover;
2. remove exact duplicates (sha256 of the downloaded file);
3. keep the `num_makes` makes with the most images (at least
   `min_images_per_make`), at most `max_images_per_make` per make, spread
   evenly over the make's models;
4. crop to the bounding box where the annotations give one, shrink so the
   short side is at most `max_short_side`, re-encode as JPEG quality 90;
5. group near-duplicate photos (the same photo at another size or with other
   labels), then split train/val/test per Stanford model class with a fixed
   seed, each near-duplicate group inside one split;
6. write ``<output>/{train,val,test}/<Make>/<file>.jpg`` and ``MANIFEST.csv``.

By default only Stanford's training half is used, as for cars20; pass
``halves=("train", "test")`` to use both.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import hashlib
import io
import json
import os
import re
from typing import Callable, Sequence

from absl import logging
import numpy as np
from PIL import Image
import tqdm

from carjax import extras
from carjax.data import decode
from carjax.data.splits import (TEST, TRAIN, VAL, seeded_rng,
                                stratified_split)

LAYOUTS = ("auto", "kaggle", "huggingface", "devkit")
TWO_WORD_MAKES = ("AM General", "Aston Martin", "Land Rover")
# How Stanford Cars spells its 49 makes, to restore the spelling from mirrors
# that lower-cased the class names ("aston martin v8 vantage coupe 2012").
STANFORD_MAKES = (
    "AM General", "Acura", "Aston Martin", "Audi", "BMW", "Bentley", "Bugatti",
    "Buick", "Cadillac", "Chevrolet", "Chrysler", "Daewoo", "Dodge", "Eagle",
    "FIAT", "Ferrari", "Fisker", "Ford", "GMC", "Geo", "HUMMER", "Honda",
    "Hyundai", "Infiniti", "Isuzu", "Jaguar", "Jeep", "Lamborghini",
    "Land Rover", "Lincoln", "MINI", "Maybach", "Mazda", "McLaren",
    "Mercedes-Benz", "Mitsubishi", "Nissan", "Plymouth", "Porsche", "Ram",
    "Rolls-Royce", "Scion", "Spyker", "Suzuki", "Tesla", "Toyota",
    "Volkswagen", "Volvo", "smart",
)
_MAKE_SPELLING = {make.lower(): make for make in STANFORD_MAKES}

MANIFEST_COLUMNS = ("split", "make", "relpath", "sha256", "width", "height",
                    "stanford_class_id", "model", "near_dup_group", "source")
JPEG_QUALITY = 90
# Near-duplicate test: 16x16 difference hashes (256 bits) of the whole
# downloaded photos that differ in at most this many bits. Re-encoding or
# resizing the same photo flips a few bits; different car photos, even of the
# same model, differ in far more (cars20's closest unrelated crops: 42+).
NEAR_DUPLICATE_MAX_BITS = 10
_DHASH_SIDE = 16
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


@dataclasses.dataclass
class PrepareSummary:
  layout: str
  output: str
  counts: dict[str, dict[str, int]]  # split -> make -> images
  annotated: int
  exact_duplicates: int
  unreadable: list[tuple[str, str]]
  missing_files: int
  near_duplicate_groups: int
  dropped_makes: list[str]

  def describe(self) -> str:
    makes = sorted({m for c in self.counts.values() for m in c})
    lines = [f"Wrote {self.output} from the {self.layout} layout: "
             f"{len(makes)} makes."]
    for split, per_make in self.counts.items():
      if per_make:
        lines.append(f"  {split}: {sum(per_make.values())} images, "
                     f"{min(per_make.values())}..{max(per_make.values())} "
                     "per make")
    lines.append(
        f"  {self.annotated} annotated images read; {self.exact_duplicates} "
        f"exact duplicates removed; {len(self.unreadable)} unreadable; "
        f"{self.missing_files} annotated files missing; "
        f"{self.near_duplicate_groups} near-duplicate groups kept together.")
    if self.dropped_makes:
      lines.append(f"  Makes not kept: {', '.join(self.dropped_makes)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Class names -> makes
# ---------------------------------------------------------------------------


def clean_class_name(name: str) -> str:
  """Normalises class names some mirrors mangle: '0001_AM_General_...' etc."""
  name = name.strip().replace("_", " ")
  name = re.sub(r"^\d+\s+(?=\D)", "", name)  # "0001 AM General ..." prefixes.
  return re.sub(r"\s+", " ", name)


def make_of(model: str) -> str:
  """The make of a Stanford class name: 'Aston Martin V8 ...' -> 'Aston Martin'.

  The first word, except for the two-word makes; spelled as Stanford spells
  it whatever the case of the input.
  """
  model = clean_class_name(model)
  lowered = model.lower()
  for make in TWO_WORD_MAKES:
    if lowered == make.lower() or lowered.startswith(make.lower() + " "):
      return make
  first_word = model.split(" ", 1)[0]
  return _MAKE_SPELLING.get(first_word.lower(), first_word)


def make_folder_name(make: str) -> str:
  """Folder name of a make: spaces become '_' ('Aston Martin' -> 'Aston_Martin')."""
  return make.replace(" ", "_").replace("/", "-")


# ---------------------------------------------------------------------------
# Layout readers
# ---------------------------------------------------------------------------


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
  images, missing = [], 0
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
      image = _devkit_image(record, os.path.join(image_dir, filename), half, class_names,
                            f"stanford_{half}_{os.path.splitext(filename)[0]}")
      if image is None:
        missing += 1
      else:
        images.append(image)
  return images, missing


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
  images, missing = [], 0
  for record in _mat_records(mat):
    half = TEST if _mat_scalar(record["test"]) else TRAIN
    if half not in halves:
      continue
    relpath = _mat_string(record["relative_im_path"])
    image = _devkit_image(
        record, os.path.join(base, relpath), half, class_names,
        f"stanford_all_{os.path.splitext(os.path.basename(relpath))[0]}")
    if image is None:
      missing += 1
    else:
      images.append(image)
  return images, missing


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


# ---------------------------------------------------------------------------
# Selection, processing, near duplicates, split
# ---------------------------------------------------------------------------


def _remove_exact_duplicates(images: list[SourceImage], workers: int
                             ) -> tuple[list[SourceImage], int]:
  """Keeps the first (by name) of byte-identical files; counts the others."""
  def digest(image: SourceImage) -> str | None:
    try:
      return hashlib.sha256(image.read()).hexdigest()
    except OSError as e:
      logging.warning("Cannot read %s: %s", image.name, e)
      return None
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    digests = list(tqdm.tqdm(pool.map(digest, images), total=len(images),
                             desc="hash", unit="img", leave=False))
  kept, seen, removed = [], {}, 0
  for image, sha in sorted(zip(images, digests, strict=True), key=lambda p: p[0].name):
    if sha is None:
      continue
    if sha in seen:
      removed += 1
      first = seen[sha]
      if first.model != image.model:
        logging.warning("Identical files with different labels: %s (%s) and "
                        "%s (%s); keeping the first.", first.name, first.model,
                        image.name, image.model)
      continue
    seen[sha] = image
    kept.append(image)
  return kept, removed


def select_makes(images: Sequence[SourceImage], *, num_makes: int,
                 min_images_per_make: int, max_images_per_make: int,
                 seed: int) -> tuple[list[SourceImage], list[str]]:
  """Keeps the top makes by image count and caps each, spread over models.

  The cap is water-filled over the make's models: every model gets the same
  share, and models with fewer images than their share pass the rest on, so
  a make's popular models do not crowd out its rare ones. Which images of a
  model are kept is a seeded shuffle.

  Returns:
    (kept images, sorted; names of makes not kept).
  """
  by_make: dict[str, list[SourceImage]] = collections.defaultdict(list)
  for image in images:
    by_make[make_of(image.model)].append(image)
  ranked = sorted(by_make, key=lambda m: (-len(by_make[m]), m))
  kept_makes = [m for m in ranked if len(by_make[m]) >= min_images_per_make]
  kept_makes = kept_makes[:num_makes]
  dropped = sorted(set(ranked) - set(kept_makes))

  kept: list[SourceImage] = []
  for make in kept_makes:
    by_model: dict[int, list[SourceImage]] = collections.defaultdict(list)
    for image in by_make[make]:
      by_model[image.class_id].append(image)
    for class_id, members in by_model.items():
      members.sort(key=lambda i: i.name)
      order = seeded_rng(seed, f"cap/{class_id}").permutation(len(members))
      by_model[class_id] = [members[i] for i in order]
    quota = {c: 0 for c in by_model}
    remaining = min(max_images_per_make, len(by_make[make]))
    while remaining > 0:
      # Round-robin, one image per model per round, in class-id order.
      for class_id in sorted(by_model):
        if remaining and quota[class_id] < len(by_model[class_id]):
          quota[class_id] += 1
          remaining -= 1
    for class_id, members in by_model.items():
      kept.extend(members[:quota[class_id]])
  return sorted(kept, key=lambda i: i.name), dropped


def difference_hash(image: np.ndarray, side: int = _DHASH_SIDE) -> np.ndarray:
  """A side*side-bit perceptual hash (packed into uint64 words).

  Each bit says whether a pixel of a small greyscale thumbnail is brighter
  than its right neighbour: stable under resizing and re-encoding.
  """
  thumbnail = Image.fromarray(image).convert("L").resize(
      (side + 1, side), Image.Resampling.BILINEAR)
  pixels = np.asarray(thumbnail, np.int16)
  bits = (pixels[:, 1:] > pixels[:, :-1]).ravel()
  return np.packbits(bits).view(np.uint64)


def group_near_duplicates(hashes: np.ndarray, max_bits: int) -> list[int]:
  """Union-find of images whose hashes differ in at most `max_bits` bits.

  Args:
    hashes: [N, words] uint64.
    max_bits: the largest Hamming distance still called a near duplicate.

  Returns:
    For each image, the index of its group's first (lowest-index) member.
  """
  n = len(hashes)
  parent = list(range(n))

  def find(i: int) -> int:
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  block = 256  # Rows per step: bounds the [block, N, words] temporary.
  for start in range(0, n, block):
    distances = np.bitwise_count(
        hashes[start:start + block, None, :] ^ hashes[None, :, :]).sum(-1)
    rows, cols = np.nonzero(distances <= max_bits)
    for i, j in zip(rows + start, cols, strict=True):
      if i < j:
        root_i, root_j = find(i), find(j)
        if root_i != root_j:
          parent[max(root_i, root_j)] = min(root_i, root_j)
  return [find(i) for i in range(n)]


@dataclasses.dataclass
class _Processed:
  jpeg: bytes
  width: int
  height: int
  sha256: str
  dhash: np.ndarray


def _crop_box(bbox, width: int, height: int):
  """Devkit boxes are 1-based and inclusive; PIL boxes 0-based, half-open."""
  x1, y1, x2, y2 = bbox
  left, top = max(0, x1 - 1), max(0, y1 - 1)
  right, bottom = min(width, x2), min(height, y2)
  if right - left < 2 or bottom - top < 2:
    return None
  return left, top, right, bottom


def process_image(image: SourceImage, max_short_side: int) -> _Processed:
  """Decode, hash, crop to the box, shrink, encode as JPEG."""
  rgb = decode.load_rgb(image.read(), name=image.name)
  dhash = difference_hash(rgb)
  pil = Image.fromarray(rgb)
  if image.bbox is not None:
    box = _crop_box(image.bbox, pil.width, pil.height)
    if box is None:
      logging.warning("%s: degenerate bounding box %s for a %dx%d image; "
                      "keeping the whole image.", image.name, image.bbox,
                      pil.width, pil.height)
    else:
      pil = pil.crop(box)
  short_side = min(pil.size)
  if max_short_side and short_side > max_short_side:
    scale = max_short_side / short_side
    pil = pil.resize((max(1, round(pil.width * scale)),
                      max(1, round(pil.height * scale))),
                     Image.Resampling.BICUBIC)
  buffer = io.BytesIO()
  pil.save(buffer, "JPEG", quality=JPEG_QUALITY)
  jpeg = buffer.getvalue()
  return _Processed(jpeg=jpeg, width=pil.width, height=pil.height,
                    sha256=hashlib.sha256(jpeg).hexdigest(), dhash=dhash)


def _check_output_dir(output_dir: str) -> None:
  if os.path.exists(output_dir) and (
      not os.path.isdir(output_dir) or os.listdir(output_dir)):
    raise FileExistsError(
        f"Output {output_dir} exists and is not an empty folder; choose a new "
        "one (nothing is overwritten).")


def prepare(input_dir: str, output_dir: str, *, layout: str = "auto",
            halves: Sequence[str] = (TRAIN,), num_makes: int = 20,
            min_images_per_make: int = 100, max_images_per_make: int = 400,
            seed: int = 0, val_fraction: float = 0.15,
            test_fraction: float = 0.15, max_short_side: int = 256,
            near_duplicate_max_bits: int = NEAR_DUPLICATE_MAX_BITS,
            num_workers: int | None = None) -> PrepareSummary:
  """Builds a make-labelled image folder from a Stanford Cars download.

  See the module docstring for the layouts and the recipe: read the layout, drop exact
  duplicates, select the makes, crop and encode, split whole near-duplicate groups, write the
  images and MANIFEST.csv. The manifest is written last, so its presence means the folder is
  complete.
  """
  if layout not in LAYOUTS:
    raise ValueError(f"Unknown layout {layout!r}; expected one of {LAYOUTS}.")
  for half in halves:
    if half not in (TRAIN, TEST):
      raise ValueError(f"Unknown Stanford half {half!r}; use train and/or test.")
  input_dir = os.path.abspath(os.path.expanduser(input_dir))
  output_dir = os.path.abspath(os.path.expanduser(output_dir))
  if not os.path.isdir(input_dir):
    raise NoStanfordCarsError(INSTRUCTIONS.format(
        where=f": {input_dir} is not a folder"))
  _check_output_dir(output_dir)
  workers = num_workers or os.cpu_count() or 1
  if layout == "auto":
    layout = detect_layout(input_dir)
    logging.info("Detected the %s layout in %s.", layout, input_dir)

  images, missing = READERS[layout](input_dir, halves)
  if not images:
    raise NoStanfordCarsError(
        f"The {layout} layout in {input_dir} gave no images for the "
        f"{'/'.join(halves)} half.")
  annotated = len(images)
  images, exact_duplicates = _remove_exact_duplicates(images, workers)
  selected, dropped = select_makes(
      images, num_makes=num_makes, min_images_per_make=min_images_per_make,
      max_images_per_make=max_images_per_make, seed=seed)
  if not selected:
    raise ValueError(f"No make has {min_images_per_make} images "
                     f"(--min_images_per_make) in {input_dir}.")
  pairs, unreadable, same_crops = _crop_and_encode(selected, max_short_side, workers)
  group_of = group_near_duplicates(
      np.stack([r.dhash for _, r in pairs]), near_duplicate_max_bits)
  split_of_unit = _split_groups(pairs, group_of, val_fraction, test_fraction, seed)
  rows = _write_images(pairs, group_of, split_of_unit, input_dir, output_dir)
  _write_manifest(rows, output_dir)

  counts: dict[str, dict[str, int]] = {TRAIN: {}, VAL: {}, TEST: {}}
  for row in rows:
    counts[row["split"]][row["make"]] = counts[row["split"]].get(
        row["make"], 0) + 1
  return PrepareSummary(
      layout=layout, output=output_dir,
      counts={s: dict(sorted(c.items())) for s, c in counts.items()},
      annotated=annotated, exact_duplicates=exact_duplicates + same_crops,
      unreadable=unreadable, missing_files=missing,
      near_duplicate_groups=sum(1 for c in collections.Counter(group_of).values() if c > 1),
      dropped_makes=dropped)


def _crop_and_encode(selected: list[SourceImage], max_short_side: int, workers: int):
  """([(image, processed)] with identical crops dropped, [(name, reason)] unreadable, how
  many identical crops were dropped), processing the images in `workers` threads."""

  def work(image: SourceImage):
    try:
      return process_image(image, max_short_side)
    except decode.UnreadableImageError as e:
      return e
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    results = list(tqdm.tqdm(pool.map(work, selected), total=len(selected),
                             desc="crop+encode", unit="img"))
  unreadable = [(e.name, e.reason) for e in results
                if isinstance(e, decode.UnreadableImageError)]
  for name, reason in unreadable:
    logging.warning("Skipping unreadable image %s: %s", name, reason)
  pairs = [(image, result) for image, result in zip(selected, results, strict=True)
           if isinstance(result, _Processed)]
  # Identical crops of different files (after re-encoding) are duplicates too.
  unique_pairs, seen_sha = [], set()
  for image, result in pairs:
    if result.sha256 not in seen_sha:
      seen_sha.add(result.sha256)
      unique_pairs.append((image, result))
  return unique_pairs, unreadable, len(pairs) - len(unique_pairs)


def _split_groups(pairs, group_of, val_fraction: float, test_fraction: float,
                  seed: int) -> dict[int, str]:
  """{near-duplicate group (its first member's index): split}. Whole groups are the split
  units, stratified by the model class of the group's first member."""
  units_by_class: dict[int, list[int]] = collections.defaultdict(list)
  for index, group in enumerate(group_of):
    if group == index:
      units_by_class[pairs[index][0].class_id].append(index)
  assignment = stratified_split(units_by_class, val_fraction=val_fraction,
                                test_fraction=test_fraction, seed=seed)
  return {u: s for s, units in assignment.items() for u in units}


def _write_images(pairs, group_of, split_of_unit, input_dir: str,
                  output_dir: str) -> list[dict]:
  """Writes every image to <split>/<make>/; returns their manifest rows in manifest order."""
  members = collections.Counter(group_of)
  rows = []
  for index, (image, result) in enumerate(pairs):
    split = split_of_unit[group_of[index]]
    make = make_folder_name(make_of(image.model))
    relpath = f"{split}/{make}/{image.output_stem}.jpg"
    path = os.path.join(output_dir, relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(result.jpeg)
    group = group_of[index]
    rows.append({
        "split": split, "make": make, "relpath": relpath,
        "sha256": result.sha256, "width": result.width,
        "height": result.height, "stanford_class_id": image.class_id,
        "model": image.model,
        "near_dup_group": (f"{pairs[group][0].output_stem}.jpg"
                           if members[group] > 1 else ""),
        "source": os.path.relpath(image.name, input_dir),
    })
  split_rank = {TRAIN: 0, VAL: 1, TEST: 2}
  rows.sort(key=lambda r: (split_rank[r["split"]], r["relpath"]))
  return rows


def _write_manifest(rows: list[dict], output_dir: str) -> None:
  """MANIFEST.csv, written whole and then renamed into place."""
  manifest_path = os.path.join(output_dir, "MANIFEST.csv")
  with open(manifest_path + ".tmp", "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(manifest_path + ".tmp", manifest_path)

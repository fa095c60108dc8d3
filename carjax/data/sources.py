"""Where labelled images come from: image folders on disk, or TFDS datasets.

A *source* lists labelled images per split without decoding them:

* `ImageFolderSource`: ``<root>/<split>/<class>/*`` (e.g. ``cars20``, or the
  output of ``launch.prepare_data``), or ``<root>/<class>/*`` with no split
  folders, which is split into train/val/test deterministically.
* `TfdsSource`: a TensorFlow Datasets dataset by name (e.g. ``cars196``).

Both expose ``class_names``, ``splits``, ``identity`` (a string that names the
data for cache keys) and ``records(split) -> list[Record]``. `open_source` turns
the ``config.data.source`` string into one of them.

Decoding and caching live in `carjax.data.cache`.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import re
from typing import Hashable, Iterable, Sequence, TypeVar, Union

from absl import logging
import numpy as np

from carjax.errors import ConfigError, DataError, MissingPathError

# File extensions (lower case) that are listed as images; anything else in a
# class folder is ignored and reported. HEIC/AVIF are deliberately absent:
# the project's decoder cannot rely on plugins for them being installed.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".webp",
    ".tif", ".tiff",
})

TRAIN, VAL, TEST = "train", "val", "test"
# Folder/split names recognised as splits, and the canonical name they mean.
_SPLIT_ALIASES = {
    "train": TRAIN, "training": TRAIN,
    "val": VAL, "valid": VAL, "validation": VAL,
    "test": TEST, "testing": TEST,
}
_SPLIT_ORDER = {TRAIN: 0, VAL: 1, TEST: 2}

_EXPECTED_FOLDER_LAYOUT = (
    "expected <root>/<split>/<class>/<image> (split folders such as train/, "
    "val/, test/) or <root>/<class>/<image> (split automatically)")

_KeyT = TypeVar("_KeyT")


@dataclasses.dataclass(frozen=True)
class Record:
  """One labelled image, not yet decoded.

  Attributes:
    name: the file path, or a TFDS id like "tfds:cars196/train/00001"; used in
      error messages and reports.
    label: the class index into the source's ``class_names``.
    path: the image file, for sources on disk.
    data: the encoded image bytes, for sources that are not files (TFDS).
  """

  name: str
  label: int
  path: str | None = None
  data: bytes | None = None


# ---------------------------------------------------------------------------
# Deterministic stratified splitting
# ---------------------------------------------------------------------------


def seeded_rng(seed: int, stratum: str) -> np.random.Generator:
  """A generator that depends only on (seed, stratum).

  Seeding each class on its own (rather than one generator walking all
  classes) means adding or removing images of one class never reshuffles
  another class's split. Python's hash() is salted per process, so a
  cryptographic hash gives the stable seed instead.
  """
  digest = hashlib.sha256(f"{seed}\0{stratum}".encode()).digest()
  return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def check_split_fractions(val_fraction: float, test_fraction: float) -> None:
  """Raises ValueError unless both fractions are in [0, 1) and leave a train."""
  for option, value in (("val_fraction", val_fraction),
                        ("test_fraction", test_fraction)):
    if not 0.0 <= value < 1.0:
      raise ConfigError(f"{option} must be in [0, 1), got {value}.")
  if val_fraction + test_fraction >= 1.0:
    raise ConfigError(
        f"val_fraction + test_fraction must be below 1 so that a train split "
        f"remains; got {val_fraction} + {test_fraction}.")


def stratified_split(
    keys_by_stratum: dict[Hashable, Sequence[_KeyT]], *,
    val_fraction: float, test_fraction: float, seed: int,
) -> dict[str, list[_KeyT]]:
  """Splits items into train/val/test, the same fractions within each stratum.

  Deterministic: the result depends only on the items of each stratum (in
  sorted order), the fractions and the seed. Within a stratum of n items,
  round(n * test_fraction) go to test and round(n * val_fraction) to val, but
  at least one item always stays in train.

  Args:
    keys_by_stratum: e.g. {class name: [file names]}; items must be sortable.
    val_fraction: share of each stratum for "val".
    test_fraction: share of each stratum for "test".
    seed: the split seed.

  Returns:
    {"train": [...], "val": [...], "test": [...]}, each list sorted.
  """
  check_split_fractions(val_fraction, test_fraction)
  result: dict[str, list[_KeyT]] = {TRAIN: [], VAL: [], TEST: []}
  for stratum in sorted(keys_by_stratum, key=str):
    keys = sorted(keys_by_stratum[stratum])
    n = len(keys)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    while n > 0 and n_test + n_val >= n:
      # Tiny strata: keep one item for training, taking from the larger share.
      if n_test >= n_val and n_test > 0:
        n_test -= 1
      else:
        n_val -= 1
    order = seeded_rng(seed, str(stratum)).permutation(n)
    shuffled = [keys[i] for i in order]
    result[TEST].extend(shuffled[:n_test])
    result[VAL].extend(shuffled[n_test:n_test + n_val])
    result[TRAIN].extend(shuffled[n_test + n_val:])
  return {split: sorted(items) for split, items in result.items()}


def canonical_split(split: str) -> str:
  return _SPLIT_ALIASES.get(split.lower(), split)


def _ordered_splits(splits: Iterable[str]) -> tuple[str, ...]:
  """train, val, test first, then any other split names alphabetically."""
  return tuple(sorted(splits, key=lambda s: (_SPLIT_ORDER.get(s, 3), s)))


def resolve_split(split: str, available: Sequence[str], where: str) -> str:
  """Maps a requested split name (or alias, e.g. 'validation') to one we have."""
  if split in available:
    return split
  canonical = canonical_split(split)
  for candidate in available:
    if canonical_split(candidate) == canonical:
      return candidate
  raise DataError(
      f"Unknown split {split!r} for {where}; available splits: "
      f"{', '.join(available) or '(none)'}.")


# ---------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------


def _visible_subdirectories(path: str) -> list[str]:
  """Sorted names of the non-hidden folders directly inside `path`."""
  with os.scandir(path) as entries:
    return sorted(e.name for e in entries
                  if e.is_dir() and not e.name.startswith("."))


def _inside(path: str, folder: str) -> bool:
  """Whether real path `path` is `folder` or lies under it."""
  return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _list_images(class_dir: str, data_root: str | None = None,
                 skipped_links: list[str] | None = None) -> tuple[list[str], list[str]]:
  """All image files under `class_dir` (recursively), and the ignored files.

  Returns absolute paths, sorted, so the listing is deterministic regardless
  of the file system's order. Symbolic links to folders inside the class
  folder are followed only where they resolve inside that same (real) class
  folder: a link out of the class (``up -> ..``, into another class or split,
  out of the data root) would label other images with this class, and a loop
  (``loop -> .``) would repeat them. Links to files are followed inside
  `data_root` (default: the class folder). Every real file is listed once.
  Skipped links are appended to `skipped_links` as "link -> target".
  """
  class_root = os.path.realpath(class_dir)
  file_root = os.path.realpath(data_root) if data_root else class_root
  skipped = skipped_links if skipped_links is not None else []
  images, ignored = [], []
  seen_dirs: set[str] = set()
  seen_files: set[str] = set()
  for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
    seen_dirs.add(os.path.realpath(dirpath))
    kept = []
    # Hidden folders (.git, .ipynb_checkpoints, ...) never hold class images.
    for d in sorted(d for d in dirnames if not d.startswith(".")):
      path = os.path.join(dirpath, d)
      target = os.path.realpath(path)
      if os.path.islink(path) and (not _inside(target, class_root) or target in seen_dirs or
                                   _inside(os.path.realpath(dirpath), target)):
        skipped.append(f"{path} -> {target}")
        continue
      kept.append(d)
    dirnames[:] = kept
    for filename in filenames:
      path = os.path.join(dirpath, filename)
      # Hidden files include macOS "._x.jpg" resource forks, which have an
      # image extension but are not images.
      if (filename.startswith(".") or
          os.path.splitext(filename)[1].lower() not in IMAGE_EXTENSIONS):
        ignored.append(path)
        continue
      target = os.path.realpath(path)
      if target in seen_files or (os.path.islink(path) and not _inside(target, file_root)):
        skipped.append(f"{path} -> {target}")
        continue
      seen_files.add(target)
      images.append(path)
  return sorted(images), sorted(ignored)


def _describe_ignored(paths: Sequence[str]) -> str:
  """'3 files (.txt: 2, .heic: 1), e.g. /a/b.txt' for log messages."""
  by_extension = collections.Counter(
      os.path.splitext(p)[1].lower() or os.path.basename(p) for p in paths)
  kinds = ", ".join(f"{ext}: {count}" for ext, count in by_extension.most_common())
  return f"{len(paths)} files ({kinds}), e.g. {paths[0]}"


class ImageFolderSource:
  """Labelled images in class folders, one folder per class.

  Two layouts are recognised:

  * ``<root>/<split>/<class>/<image>``, used when `root` holds a folder named
    like a split (train, val/valid/validation, test). Every folder in `root`
    is then a split. The classes are the train split's folders (sorted); a
    class folder in another split that train lacks is an error, because the
    model could never have learned it.
  * ``<root>/<class>/<image>``: the images of each class are split into
    train/val/test, stratified per class, by `stratified_split` with
    `split_seed`, `val_fraction` and `test_fraction`.

  Images are found recursively inside each class folder by extension
  (`IMAGE_EXTENSIONS`, case-insensitive); other files are ignored, counted
  (`ignored_files`) and logged.
  """

  def __init__(self, root: str | os.PathLike, *, split_seed: int = 0,
               val_fraction: float = 0.15, test_fraction: float = 0.15):
    self.root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(self.root):
      what = "is not a folder" if os.path.exists(self.root) else "does not exist"
      raise MissingPathError(
          f"Image folder {self.root} {what}; {_EXPECTED_FOLDER_LAYOUT}.")
    top_folders = _visible_subdirectories(self.root)
    if not top_folders:
      raise DataError(
          f"Image folder {self.root} contains no folders; "
          f"{_EXPECTED_FOLDER_LAYOUT}.")

    self.has_split_folders = any(
        name.lower() in _SPLIT_ALIASES for name in top_folders)
    self._records: dict[str, list[Record]] = {}
    self.ignored_files: dict[str, tuple[str, ...]] = {}
    self.skipped_links: list[str] = []
    if self.has_split_folders:
      self._scan_split_folders(top_folders)
      self.split_params = None
    else:
      check_split_fractions(val_fraction, test_fraction)
      self._scan_class_folders(top_folders, split_seed=split_seed,
                               val_fraction=val_fraction,
                               test_fraction=test_fraction)
      self.split_params = (split_seed, val_fraction, test_fraction)
    self.splits: tuple[str, ...] = _ordered_splits(self._records)
    self._check_links()

  def _check_links(self) -> None:
    """Reports skipped links; refuses one real file under two classes or splits."""
    if self.skipped_links:
      logging.warning(
          "Image folder %s: skipped %d symbolic links that leave their class folder, loop "
          "or repeat files already listed, e.g. %s", self.root, len(self.skipped_links),
          self.skipped_links[0])
    owner: dict[str, tuple[str, int, str]] = {}
    for split, records in self._records.items():
      for r in records:
        real = os.path.realpath(r.path)
        first = owner.setdefault(real, (split, r.label, r.path))
        if first[:2] != (split, r.label):
          raise DataError(
              f"Image folder {self.root}: the file {real} is listed as {r.path} (split "
              f"{split}, class {self.class_names[r.label]}) and as {first[2]} (split "
              f"{first[0]}, class {self.class_names[first[1]]}), through a symbolic link; "
              "remove the link")

  def _scan_split_folders(self, split_folders: list[str]) -> None:
    train_folders = [f for f in split_folders
                     if canonical_split(f) == TRAIN]
    if len(train_folders) != 1:
      raise DataError(
          f"Image folder {self.root} has split folders ({', '.join(split_folders)}) "
          f"but {'no' if not train_folders else 'more than one'} train split "
          f"folder; the train split defines the classes ({_EXPECTED_FOLDER_LAYOUT}).")
    train_dir = os.path.join(self.root, train_folders[0])
    self.class_names: tuple[str, ...] = tuple(
        _visible_subdirectories(train_dir))
    if not self.class_names:
      raise DataError(
          f"Train split folder {train_dir} has no class folders; expected "
          f"{train_dir}/<class>/<image>.")
    class_index = {name: i for i, name in enumerate(self.class_names)}

    for split_folder in split_folders:
      split_dir = os.path.join(self.root, split_folder)
      records, ignored = [], []
      for class_name in _visible_subdirectories(split_dir):
        if class_name not in class_index:
          raise DataError(
              f"Class folder {os.path.join(split_dir, class_name)} has no "
              f"counterpart in the train split {train_dir}: every class must "
              "have training images. Rename or remove it, or add it to train. "
              f"Train classes: {', '.join(self.class_names)}.")
        images, ignored_here = _list_images(os.path.join(split_dir, class_name), self.root,
                                            self.skipped_links)
        records.extend(Record(name=p, label=class_index[class_name], path=p)
                       for p in images)
        ignored.extend(ignored_here)
      with os.scandir(split_dir) as entries:
        # Files lying directly in a split folder belong to no class.
        ignored.extend(sorted(e.path for e in entries if e.is_file()))
      self._add_split(split_folder, records, ignored)

    train_counts = collections.Counter(
        r.label for r in self._records[train_folders[0]])
    empty = [c for i, c in enumerate(self.class_names) if not train_counts[i]]
    if empty:
      logging.warning("Train class folders with no images in %s: %s",
                      train_dir, ", ".join(empty))

  def _scan_class_folders(self, class_folders: list[str], *, split_seed: int,
                          val_fraction: float, test_fraction: float) -> None:
    self.class_names = tuple(class_folders)
    paths_by_class: dict[int, list[str]] = {}
    ignored: list[str] = []
    for label, class_name in enumerate(self.class_names):
      images, ignored_here = _list_images(os.path.join(self.root, class_name), self.root,
                                          self.skipped_links)
      paths_by_class[label] = images
      ignored.extend(ignored_here)
    if not any(paths_by_class.values()):
      raise DataError(
          f"Image folder {self.root} has folders ({', '.join(class_folders[:5])}"
          f"{', ...' if len(class_folders) > 5 else ''}) but no image files "
          f"in them; {_EXPECTED_FOLDER_LAYOUT}. Image extensions: "
          f"{', '.join(sorted(IMAGE_EXTENSIONS))}.")
    label_of = {p: label for label, paths in paths_by_class.items()
                for p in paths}
    assignment = stratified_split(paths_by_class, val_fraction=val_fraction,
                                  test_fraction=test_fraction, seed=split_seed)
    fractions = {TRAIN: 1.0, VAL: val_fraction, TEST: test_fraction}
    for split, paths in assignment.items():
      if fractions[split] > 0:
        self._add_split(
            split, [Record(name=p, label=label_of[p], path=p) for p in paths],
            ignored if split == TRAIN else [])

  def _add_split(self, split: str, records: list[Record],
                 ignored: list[str]) -> None:
    self._records[split] = sorted(records, key=lambda r: r.name)
    self.ignored_files[split] = tuple(ignored)
    if ignored:
      logging.warning(
          "Image folder %s, split %s: ignored %s that do not have an image "
          "extension (%s) or are hidden.", self.root, split,
          _describe_ignored(ignored), " ".join(sorted(IMAGE_EXTENSIONS)))

  @property
  def identity(self) -> str:
    """Names this data (root, layout, split parameters) for cache keys."""
    return f"folder:{self.root}:split_params={self.split_params}"

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def records(self, split: str) -> list[Record]:
    """The split's images, sorted by path.

    Raises:
      ValueError: naming the root and the available splits, for an unknown
        split.
    """
    split = resolve_split(split, self.splits, f"image folder {self.root}")
    return list(self._records[split])

  def __repr__(self) -> str:
    sizes = ", ".join(f"{s}={len(self._records[s])}" for s in self.splits)
    return (f"ImageFolderSource({self.root!r}, {self.num_classes} classes, "
            f"{sizes})")


# ---------------------------------------------------------------------------
# TensorFlow Datasets
# ---------------------------------------------------------------------------

# cars196's download URLs (ai.stanford.edu/~jkrause/...) are dead. TFDS uses
# a file from `manual_dir` instead of downloading it when the file has the
# registered name and checksum, so the original archives work if you have
# them from another mirror, byte-identical.
CARS196_MANUAL_FILES = (
    "cars_train.tgz", "cars_test.tgz", "car_devkit.tgz",
    "cars_test_annos_withlabels.mat",
)
CARS196_INSTRUCTIONS = (
    "tfds:cars196 cannot download its data: the Stanford URLs are dead. "
    "Either (1) put the four original files {files} (byte-identical: TFDS "
    "checks their sha256) in one folder and pass it as the TFDS manual_dir "
    "(config.data.tfds_manual_dir); or, simpler, (2) download a mirror of "
    "Stanford Cars (Kaggle 'stanford-car-dataset-by-classes-folder', a "
    "Hugging Face copy, or the devkit and images) and run "
    "`python -m launch.prepare_data --input=<download> --output=<folder>`, "
    "then use config.data.source='folder:<folder>' (labelled by make, "
    "cropped to the cars' bounding boxes)."
).format(files=", ".join(CARS196_MANUAL_FILES))


class TfdsSource:
  """A TensorFlow Datasets dataset, read without decoding its images.

  Records carry the encoded image bytes (`Record.data`), so the images are
  decoded by the same robust `carjax.data.decode.load_rgb` as image folders.
  Class names come from the label feature (a `tfds.features.ClassLabel`).

  If the dataset has no validation split (cars196 has only train and test),
  one is carved out of train, stratified by label, with `val_fraction` and
  `split_seed`; "train" is then the rest. A missing test split is carved the
  same way with `test_fraction`.

  The dataset must already be prepared in `data_dir`, unless `manual_dir` is
  given (files the builder would otherwise download; see
  `CARS196_INSTRUCTIONS`) or `download=True` lets TFDS download it.

  The whole split is held in memory as bytes (cars196's train split is about
  1 GB); fine for datasets of this size.
  """

  def __init__(self, name: str, *, data_dir: str | os.PathLike | None = None,
               manual_dir: str | os.PathLike | None = None,
               download: bool = False, image_key: str = "image",
               label_key: str = "label", split_seed: int = 0,
               val_fraction: float = 0.15, test_fraction: float = 0.15):
    from carjax import extras, tensorflow_setup  # pylint: disable=g-import-not-at-top
    purpose = f"The TFDS data source tfds:{name}"
    tensorflow_setup.import_tensorflow("tfds", purpose)  # TFDS runs TensorFlow: off the GPUs.
    tfds = extras.import_optional("tensorflow_datasets", "tfds", purpose)
    check_split_fractions(val_fraction, test_fraction)
    self.name = name
    self._tfds = tfds
    self._image_key, self._label_key = image_key, label_key
    self._split_seed = split_seed
    self._val_fraction, self._test_fraction = val_fraction, test_fraction
    try:
      self._builder = tfds.builder(
          name, data_dir=os.fspath(data_dir) if data_dir else None)
    except Exception as e:  # DatasetNotFoundError and friends.
      raise DataError(f"TFDS has no dataset {name!r}: {e}") from e
    if not self._builder.is_prepared():
      self._prepare(manual_dir, download)

    features = self._builder.info.features
    for option, key in (("image_key", image_key), ("label_key", label_key)):
      if key not in features:
        raise DataError(
            f"TFDS dataset {name!r} has no feature {key!r} ({option}); its "
            f"features are: {', '.join(features.keys())}.")
    label_feature = features[label_key]
    if not isinstance(label_feature, tfds.features.ClassLabel):
      raise DataError(
          f"Feature {label_key!r} of TFDS dataset {name!r} is a "
          f"{type(label_feature).__name__}, not a ClassLabel; set label_key "
          "to its class-label feature.")
    self.class_names: tuple[str, ...] = tuple(label_feature.names)
    # Features that name an example, used (if present) in Record.name.
    self._id_key = next((k for k in ("id", "image/filename", "file_name",
                                     "filename") if k in features), None)

    tfds_splits = list(self._builder.info.splits.keys())
    self._tfds_split_of: dict[str, str] = {
        canonical_split(s): s for s in tfds_splits}
    self._carved: dict[str, list[Record]] | None = None
    self._carve_from_train = (
        TRAIN in self._tfds_split_of and
        ((VAL not in self._tfds_split_of and val_fraction > 0) or
         (TEST not in self._tfds_split_of and test_fraction > 0)))
    available = set(self._tfds_split_of)
    if self._carve_from_train:
      available |= {s for s, f in ((VAL, val_fraction), (TEST, test_fraction))
                    if f > 0}
    self.splits: tuple[str, ...] = _ordered_splits(available)

  def _prepare(self, manual_dir, download: bool) -> None:
    tfds = self._tfds
    if manual_dir is None and not download:
      hint = (CARS196_INSTRUCTIONS if self.name.split(":")[0] == "cars196" else
              "Prepare it first (tfds build, or TfdsSource(download=True)), "
              "or pass the data_dir that holds it.")
      raise MissingPathError(
          f"TFDS dataset {self.name!r} is not prepared in "
          f"{self._builder.data_dir_root}. {hint}")
    if manual_dir is not None:
      manual_dir = os.fspath(manual_dir)
      if self.name.split(":")[0] == "cars196":
        missing = [f for f in CARS196_MANUAL_FILES
                   if not os.path.exists(os.path.join(manual_dir, f))]
        if missing:
          # Without them TFDS would try the dead URLs and fail obscurely.
          raise MissingPathError(
              f"TFDS manual_dir {manual_dir} lacks {', '.join(missing)}. "
              f"{CARS196_INSTRUCTIONS}")
    self._builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))

  @property
  def identity(self) -> str:
    """Names this data (dataset, version, location, carving) for cache keys."""
    carving = ((self._split_seed, self._val_fraction, self._test_fraction)
               if self._carve_from_train else None)
    return (f"tfds:{self._builder.info.full_name}:{self._builder.data_dir}:"
            f"{self._image_key}:{self._label_key}:carve={carving}")

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def _read_tfds_split(self, tfds_split: str) -> list[Record]:
    tfds = self._tfds
    keys = [self._image_key, self._label_key] + (
        [self._id_key] if self._id_key else [])
    dataset = self._builder.as_dataset(
        split=tfds_split, shuffle_files=False,
        decoders={self._image_key: tfds.decode.SkipDecoding()})
    dataset = dataset.map(lambda example: {k: example[k] for k in keys})
    records = []
    for index, example in enumerate(tfds.as_numpy(dataset)):
      example_id = example[self._id_key] if self._id_key else index
      if isinstance(example_id, bytes):
        example_id = example_id.decode("utf-8", "replace")
      records.append(Record(
          name=f"tfds:{self.name}/{tfds_split}/{example_id}",
          label=int(example[self._label_key]),
          data=bytes(example[self._image_key])))
    return records

  def _carve(self) -> dict[str, list[Record]]:
    if self._carved is None:
      train = self._read_tfds_split(self._tfds_split_of[TRAIN])
      indices_by_label: dict[int, list[int]] = collections.defaultdict(list)
      for i, record in enumerate(train):
        indices_by_label[record.label].append(i)
      val_fraction = self._val_fraction if VAL not in self._tfds_split_of else 0
      test_fraction = (self._test_fraction if TEST not in self._tfds_split_of
                       else 0)
      assignment = stratified_split(
          indices_by_label, val_fraction=val_fraction,
          test_fraction=test_fraction, seed=self._split_seed)
      self._carved = {split: [train[i] for i in indices]
                      for split, indices in assignment.items() if indices}
    return self._carved

  def records(self, split: str) -> list[Record]:
    """The split's examples in the dataset's stored order."""
    split = resolve_split(split, self.splits, f"TFDS dataset {self.name!r}")
    if self._carve_from_train and (split == TRAIN or
                                   split not in self._tfds_split_of):
      return list(self._carve().get(split, []))
    return self._read_tfds_split(self._tfds_split_of[split])

  def __repr__(self) -> str:
    return (f"TfdsSource({self.name!r}, {self.num_classes} classes, splits="
            f"{self.splits})")


# ---------------------------------------------------------------------------
# Source specs
# ---------------------------------------------------------------------------

Source = Union[ImageFolderSource, TfdsSource]

_ACCEPTED_SPECS = (
    "accepted forms: 'folder:/path/to/images' or a bare path (an image "
    "folder: <root>/<split>/<class>/<image> or <root>/<class>/<image>), and "
    "'tfds:NAME' (a TensorFlow Datasets dataset, e.g. 'tfds:cars196')")


def open_source(spec: str, *, split_seed: int = 0, val_fraction: float = 0.15,
                test_fraction: float = 0.15,
                tfds_data_dir: str | os.PathLike | None = None,
                tfds_manual_dir: str | os.PathLike | None = None) -> Source:
  """Opens the data source named by ``config.data.source``.

  Args:
    spec: 'folder:/path', a bare path, or 'tfds:NAME' (NAME may carry a TFDS
      config/version, e.g. 'tfds:cars196:2.1.0').
    split_seed: seed of automatic splits (folders without split folders,
      TFDS datasets without a validation split).
    val_fraction: share of each class for an automatic val split.
    test_fraction: share of each class for an automatic test split.
    tfds_data_dir: where TFDS datasets are prepared (TFDS default if None).
    tfds_manual_dir: manually downloaded files for a TFDS builder (cars196).

  Raises:
    ValueError: for a malformed spec, naming config.data.source and the
      accepted forms.
  """
  if not isinstance(spec, str) or not spec.strip():
    raise DataError(
        f"config.data.source is empty or not a string ({spec!r}); "
        f"{_ACCEPTED_SPECS}.")
  spec = spec.strip()
  split_options = dict(split_seed=split_seed, val_fraction=val_fraction,
                       test_fraction=test_fraction)
  scheme, sep, rest = spec.partition(":")
  if sep and scheme == "tfds":
    if not rest.strip():
      raise DataError(f"config.data.source={spec!r} names no TFDS dataset; "
                       f"{_ACCEPTED_SPECS}.")
    return TfdsSource(rest.strip(), data_dir=tfds_data_dir,
                      manual_dir=tfds_manual_dir, **split_options)
  if sep and scheme == "folder":
    if not rest.strip():
      raise DataError(f"config.data.source={spec!r} names no folder; "
                       f"{_ACCEPTED_SPECS}.")
    return ImageFolderSource(os.path.expanduser(rest.strip()), **split_options)
  # Anything else that looks like "scheme:..." (but is not an existing path or
  # a Windows drive such as C:\) is a typo or an unsupported source kind.
  looks_like_scheme = bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", spec))
  if looks_like_scheme and not os.path.exists(spec):
    raise DataError(
        f"config.data.source={spec!r} has an unknown kind {scheme!r}; "
        f"{_ACCEPTED_SPECS}.")
  return ImageFolderSource(os.path.expanduser(spec), **split_options)

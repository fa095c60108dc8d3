"""Where labelled images come from: image folders on disk, or a TFDS dataset.

A *source* lists labelled images per split without decoding them:

* `ImageFolderSource`: ``<root>/<split>/<class>/*`` (e.g. ``cars20``, or the
  output of ``launch.prepare_data``), or ``<root>/<class>/*`` with no split
  folders, which is split into train/val/test deterministically.
* `TfdsSource` (`carjax.data.tfds_source`): a TensorFlow Datasets dataset by
  name (e.g. ``cars196``).

Both expose ``class_names``, ``splits``, ``identity`` (a string that names the
data for cache keys) and ``records(split) -> list[Record]`` (`carjax.data.records`).
`open_source` turns the ``config.data.source`` string into one of them.

Split names and stratified splitting live in `carjax.data.splits`; decoding and
caching in `carjax.data.cache`.
"""

from __future__ import annotations

import collections
import os
import re
from typing import Sequence, Union

from absl import logging

from carjax.data.records import Record
from carjax.data.splits import (SPLIT_ALIASES, TEST, TRAIN, VAL, canonical_split,
                                check_split_fractions, ordered_splits, resolve_split,
                                stratified_split)
from carjax.data.tfds_source import TfdsSource
from carjax.errors import DataError, MissingPathError

# File extensions (lower case) that are listed as images; anything else in a
# class folder is ignored and reported. HEIC/AVIF are deliberately absent:
# the project's decoder cannot rely on plugins for them being installed.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".webp",
    ".tif", ".tiff",
})

_EXPECTED_FOLDER_LAYOUT = (
    "expected <root>/<split>/<class>/<image> (split folders such as train/, "
    "val/, test/) or <root>/<class>/<image> (split automatically)")


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
        name.lower() in SPLIT_ALIASES for name in top_folders)
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
    self.splits: tuple[str, ...] = ordered_splits(self._records)
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
  kind, value = _parse_spec(spec)
  if kind == "tfds":
    if not value:
      raise DataError(f"config.data.source={spec!r} names no TFDS dataset; "
                       f"{_ACCEPTED_SPECS}.")
    return TfdsSource(value, data_dir=tfds_data_dir,
                      manual_dir=tfds_manual_dir, **split_options)
  if kind == "unknown":
    raise DataError(
        f"config.data.source={spec!r} has an unknown kind {value!r}; "
        f"{_ACCEPTED_SPECS}.")
  if not value:
    raise DataError(f"config.data.source={spec!r} names no folder; "
                     f"{_ACCEPTED_SPECS}.")
  return ImageFolderSource(os.path.expanduser(value), **split_options)


def _parse_spec(spec: str) -> tuple[str, str]:
  """('tfds', NAME), ('folder', PATH) or ('unknown', KIND) of a stripped source spec: a bare
  path is a folder, and anything else that looks like "kind:..." (but is not an existing path
  or a Windows drive such as C:\\) is a typo or an unsupported source kind."""
  scheme, sep, rest = spec.partition(":")
  if sep and scheme in ("tfds", "folder"):
    return scheme, rest.strip()
  if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", spec) and not os.path.exists(spec):
    return "unknown", scheme
  return "folder", spec


def same_source(a: str, b: str) -> bool:
  """Whether two `config.data.source` specs name the same data: the same spec, or the same
  folder reached through other spellings (relative to the current directory, absolute or
  through a link), as `open_source` would open it from here."""
  a, b = a.strip(), b.strip()
  if a == b:
    return True
  (kind_a, folder_a), (kind_b, folder_b) = _parse_spec(a), _parse_spec(b)
  if kind_a != "folder" or kind_b != "folder":
    return False
  real = lambda folder: os.path.realpath(os.path.expanduser(folder))
  return real(folder_a) == real(folder_b)

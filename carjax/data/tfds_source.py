"""A TensorFlow Datasets dataset as a data source (e.g. ``tfds:cars196``).

TensorFlow and TFDS are imported when a `TfdsSource` is made, not with this module: the
rest of carjax runs without them.
"""

from __future__ import annotations

import collections
import os

from carjax.data.records import Record
from carjax.data.splits import (TEST, TRAIN, VAL, canonical_split, check_split_fractions,
                                ordered_splits, resolve_split, stratified_split)
from carjax.errors import DataError, MissingPathError

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
    self.splits: tuple[str, ...] = ordered_splits(available)

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

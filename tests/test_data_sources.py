"""Tests for carjax.data.sources: image-folder layouts, automatic splits, source specs."""

from __future__ import annotations

import os
import pathlib

import numpy as np
from PIL import Image
import pytest

from carjax.data.records import Record
from carjax.data.sources import ImageFolderSource, open_source

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get(
    "CARJAX_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def _write_jpeg(path: pathlib.Path, value: int = 128) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.new("RGB", (6, 4), (value, value, value)).save(path, "JPEG")


def _make_tree(root: pathlib.Path, layout: dict[str, int]) -> None:
  """layout: {'train/a': 3, ...} -> that many JPEGs in each folder."""
  for folder, count in layout.items():
    for i in range(count):
      _write_jpeg(root / folder / f"img{i:03d}.jpg", value=i)


# ---------------------------------------------------------------------------
# <root>/<split>/<class>/*
# ---------------------------------------------------------------------------


def test_split_folders_give_sorted_classes_and_records(tmp_path):
  _make_tree(tmp_path, {"train/b": 2, "train/a": 3, "val/a": 1, "val/b": 1})
  source = ImageFolderSource(tmp_path)
  assert source.has_split_folders
  assert source.class_names == ("a", "b")
  assert source.splits == ("train", "val")
  train = source.records("train")
  assert [r.label for r in train] == [0, 0, 0, 1, 1]
  assert [r.name for r in train] == sorted(r.name for r in train)
  assert all(r.path == r.name and os.path.isabs(r.path) and r.data is None
             for r in train)
  assert isinstance(train[0], Record)
  assert len(source.records("val")) == 2


def test_image_extensions_are_case_insensitive_and_others_ignored(tmp_path):
  _make_tree(tmp_path, {"train/a": 1})
  _write_jpeg(tmp_path / "train/a/UPPER.JPG")
  _write_jpeg(tmp_path / "train/a/nested/deeper.jpeg")
  (tmp_path / "train/a/notes.txt").write_text("not an image")
  (tmp_path / "train/a/.DS_Store").write_bytes(b"\0")
  (tmp_path / "train/a/._img000.jpg").write_bytes(b"resource fork")
  (tmp_path / "train/README.md").write_text("stray file")
  source = ImageFolderSource(tmp_path)
  names = [os.path.relpath(r.name, tmp_path) for r in source.records("train")]
  assert names == ["train/a/UPPER.JPG", "train/a/img000.jpg",
                   "train/a/nested/deeper.jpeg"]
  ignored = {os.path.relpath(p, tmp_path) for p in source.ignored_files["train"]}
  assert ignored == {"train/a/notes.txt", "train/a/.DS_Store",
                     "train/a/._img000.jpg", "train/README.md"}


def test_unknown_split_error_names_root_and_available_splits(tmp_path):
  _make_tree(tmp_path, {"train/a": 1, "val/a": 1})
  source = ImageFolderSource(tmp_path)
  with pytest.raises(ValueError) as info:
    source.records("test")
  message = str(info.value)
  assert str(tmp_path) in message and "train, val" in message


def test_split_aliases(tmp_path):
  _make_tree(tmp_path, {"train/a": 1, "validation/a": 2})
  source = ImageFolderSource(tmp_path)
  assert source.splits == ("train", "validation")
  assert len(source.records("val")) == 2


def test_class_missing_from_train_is_an_error_naming_the_folder(tmp_path):
  _make_tree(tmp_path, {"train/a": 1, "val/a": 1, "val/zebra": 1})
  with pytest.raises(ValueError) as info:
    ImageFolderSource(tmp_path)
  assert str(tmp_path / "val" / "zebra") in str(info.value)


def test_class_missing_from_val_is_fine(tmp_path):
  _make_tree(tmp_path, {"train/a": 1, "train/b": 1, "val/b": 1})
  source = ImageFolderSource(tmp_path)
  assert [r.label for r in source.records("val")] == [1]


def test_split_folders_without_train_is_an_error(tmp_path):
  _make_tree(tmp_path, {"val/a": 1, "test/a": 1})
  with pytest.raises(ValueError, match="no train split"):
    ImageFolderSource(tmp_path)


def test_missing_and_empty_roots_explain_the_expected_layout(tmp_path):
  with pytest.raises(FileNotFoundError) as info:
    ImageFolderSource(tmp_path / "absent")
  assert str(tmp_path / "absent") in str(info.value)
  assert "<root>/<split>/<class>/<image>" in str(info.value)

  with pytest.raises(ValueError, match="contains no folders"):
    ImageFolderSource(tmp_path)

  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "readme.txt").write_text("x")
  with pytest.raises(ValueError, match="no image files"):
    ImageFolderSource(tmp_path)


# ---------------------------------------------------------------------------
# <root>/<class>/* with automatic splits
# ---------------------------------------------------------------------------


def test_flat_folders_are_split_deterministically_and_stratified(tmp_path):
  _make_tree(tmp_path, {"cat": 40, "dog": 20, "emu": 1})
  source = ImageFolderSource(tmp_path, split_seed=3)
  assert not source.has_split_folders
  assert source.splits == ("train", "val", "test")
  assert source.class_names == ("cat", "dog", "emu")

  by_split = {s: source.records(s) for s in source.splits}
  names = [r.name for records in by_split.values() for r in records]
  assert len(names) == len(set(names)) == 61  # Disjoint and complete.
  counts = {s: np.bincount([r.label for r in rs], minlength=3).tolist()
            for s, rs in by_split.items()}
  # round(40 * .15) = 6, round(20 * .15) = 3; a single image stays in train.
  assert counts == {"train": [28, 14, 1], "val": [6, 3, 0], "test": [6, 3, 0]}

  again = ImageFolderSource(tmp_path, split_seed=3)
  assert all(again.records(s) == by_split[s] for s in source.splits)
  other_seed = ImageFolderSource(tmp_path, split_seed=4)
  assert other_seed.records("val") != by_split["val"]


def test_adding_images_to_one_class_leaves_other_classes_split_alone(tmp_path):
  _make_tree(tmp_path, {"cat": 20, "dog": 20})
  before = ImageFolderSource(tmp_path).records("val")
  _write_jpeg(tmp_path / "cat" / "extra.jpg")
  after = ImageFolderSource(tmp_path).records("val")
  dogs = lambda records: [r.name for r in records if r.label == 1]
  assert dogs(before) == dogs(after)


def test_zero_test_fraction_gives_no_test_split(tmp_path):
  _make_tree(tmp_path, {"cat": 10})
  source = ImageFolderSource(tmp_path, val_fraction=0.2, test_fraction=0.0)
  assert source.splits == ("train", "val")
  with pytest.raises(ValueError, match="Unknown split 'test'"):
    source.records("test")


def test_bad_fractions(tmp_path):
  _make_tree(tmp_path, {"cat": 3})
  with pytest.raises(ValueError, match="below 1"):
    ImageFolderSource(tmp_path, val_fraction=0.5, test_fraction=0.5)


# ---------------------------------------------------------------------------
# open_source
# ---------------------------------------------------------------------------


def test_open_source_folder_specs(tmp_path):
  _make_tree(tmp_path, {"train/a": 1})
  for spec in (f"folder:{tmp_path}", str(tmp_path), f" folder:{tmp_path} "):
    source = open_source(spec)
    assert isinstance(source, ImageFolderSource)
    assert source.root == str(tmp_path)


@pytest.mark.parametrize("spec", ["hf:stanford_cars", "tfds:", "folder:", "",
                                  "s3://bucket/cars"])
def test_open_source_bad_specs_name_the_option(spec):
  with pytest.raises(ValueError) as info:
    open_source(spec)
  assert "config.data.source" in str(info.value)
  assert "tfds:NAME" in str(info.value) and "folder:" in str(info.value)


# ---------------------------------------------------------------------------
# Real data
# ---------------------------------------------------------------------------


@pytest.mark.real_data
def test_real_cars20_layout():
  root = SHARED_DATA / "cars20"
  if not root.is_dir():
    pytest.skip(f"real data not found at {root} (set CARJAX_SHARED_DATA)")
  source = open_source(f"folder:{root}")
  assert source.splits == ("train", "val")
  assert len(source.class_names) == 20
  assert source.class_names[:3] == ("Acura", "Aston_Martin", "Audi")
  assert len(source.records("train")) == 3605
  assert len(source.records("val")) == 779
  assert not any(source.ignored_files.values())

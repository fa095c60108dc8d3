"""Tests for carjax.data.stanford_cars.recipe on tiny fake Kaggle downloads
(tests/fake_stanford_cars.py): selection, caps, crops, duplicates, splits, the manifest."""

from __future__ import annotations

import collections
import os

from PIL import Image
import pytest

from carjax.data.sources import ImageFolderSource
from carjax.data.stanford_cars import recipe
from tests import fake_stanford_cars as fakes


def test_kaggle_layout(tmp_path):
  download = tmp_path / "download"
  fakes.write_kaggle(download)
  audi_dir = download / "car_data/car_data/train/Audi S4 Sedan 2012"
  # An exact duplicate, an unreadable file and an annotated-but-missing file.
  first_audi = sorted(audi_dir.iterdir())[0]
  (audi_dir / "90001.jpg").write_bytes(first_audi.read_bytes())
  (audi_dir / "90002.jpg").write_bytes(b"not a jpeg")
  with open(download / "anno_train.csv", "a") as f:
    f.write(f"90001.jpg,{','.join(map(str, fakes.BBOX))},4\n")
    f.write(f"90002.jpg,{','.join(map(str, fakes.BBOX))},4\n")
    f.write(f"90003.jpg,{','.join(map(str, fakes.BBOX))},4\n")

  output = tmp_path / "out"
  summary = recipe.prepare(
      str(download), str(output), num_makes=3, min_images_per_make=5,
      max_images_per_make=10, seed=1, val_fraction=0.25, test_fraction=0.25)
  assert summary.layout == "kaggle"
  assert summary.exact_duplicates == 1
  assert [os.path.basename(n) for n, _ in summary.unreadable] == ["90002.jpg"]
  assert summary.missing_files == 1
  # Aston Martin 12, Audi 8, Mercedes-Benz 7 are the top 3; AM General (4)
  # and Ram (2) fall below the minimum of 5.
  assert summary.dropped_makes == ["AM General", "Ram"]

  rows = fakes.check_output_matches_manifest(output)
  per_make = collections.Counter(r["make"] for r in rows)
  assert per_make == {"Aston_Martin": 10, "Audi": 8, "Mercedes-Benz": 7}
  # The cap of 10 is spread over Aston Martin's models: the 3 Virage images
  # are all kept and the V8 Vantage fills the rest.
  aston = collections.Counter(r["stanford_class_id"] for r in rows
                              if r["make"] == "Aston_Martin")
  assert aston == {"2": 7, "3": 3}
  # Only the train half, by default; crops have the bounding box's size
  # (1-based inclusive coordinates).
  assert all(r["relpath"].split("/")[-1].startswith("stanford_train_")
             for r in rows)
  assert {(r["width"], r["height"]) for r in rows} == {("36", "24")}
  # Stratified per model class: 8 Audi S4 -> 2 val, 2 test.
  audi = collections.Counter(r["split"] for r in rows if r["make"] == "Audi")
  assert audi == {"train": 4, "val": 2, "test": 2}
  assert rows[0]["model"] == "Aston Martin V8 Vantage Coupe 2012"

  # The output is an image-folder source with all three splits.
  source = ImageFolderSource(output)
  assert source.class_names == ("Aston_Martin", "Audi", "Mercedes-Benz")
  assert source.splits == ("train", "val", "test")

  # Deterministic: the same inputs give the same manifest.
  again = tmp_path / "again"
  recipe.prepare(str(download), str(again), num_makes=3,
                 min_images_per_make=5, max_images_per_make=10, seed=1,
                 val_fraction=0.25, test_fraction=0.25)
  assert fakes.read_manifest(again) == rows


def test_kaggle_both_halves_and_short_side_cap(tmp_path):
  download = tmp_path / "download"
  fakes.write_kaggle(download)
  output = tmp_path / "out"
  summary = recipe.prepare(str(download), str(output), layout="kaggle",
                           halves=("train", "test"), num_makes=2,
                           min_images_per_make=1, max_short_side=12)
  rows = fakes.check_output_matches_manifest(output)
  assert summary.counts and len({r["make"] for r in rows}) == 2
  names = {r["relpath"].split("/")[-1][:15] for r in rows}
  assert names == {"stanford_train_", "stanford_test_0"}
  assert {(r["width"], r["height"]) for r in rows} == {("18", "12")}


def test_near_duplicates_stay_in_one_split(tmp_path):
  download = tmp_path / "download"
  fakes.write_kaggle(download, with_test=False)
  # The same photo again under another file name, re-encoded at another
  # quality: not byte-identical, but a near duplicate.
  source_file = sorted(
      (download / "car_data/car_data/train/Audi S4 Sedan 2012").iterdir())[0]
  photo = Image.open(source_file)
  copy = download / "car_data/car_data/train/Audi S4 Sedan 2012/80001.jpg"
  photo.save(copy, "JPEG", quality=60)
  with open(download / "anno_train.csv", "a") as f:
    f.write(f"80001.jpg,{','.join(map(str, fakes.BBOX))},4\n")
  output = tmp_path / "out"
  summary = recipe.prepare(str(download), str(output), min_images_per_make=1,
                           val_fraction=0.3, test_fraction=0.3, seed=5)
  assert summary.near_duplicate_groups == 1
  rows = fakes.read_manifest(output)
  grouped = [r for r in rows if r["near_dup_group"]]
  assert len(grouped) == 2
  assert grouped[0]["split"] == grouped[1]["split"]
  assert grouped[0]["near_dup_group"] == grouped[1]["near_dup_group"]


def test_refuses_non_empty_output(tmp_path):
  download = tmp_path / "download"
  fakes.write_kaggle(download, with_test=False)
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "keep.txt").write_text("mine")
  with pytest.raises(FileExistsError, match="not an empty folder"):
    recipe.prepare(str(download), str(tmp_path / "out"))

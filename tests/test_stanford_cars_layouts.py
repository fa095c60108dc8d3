"""Tests for carjax.data.stanford_cars.layouts: the Hugging Face and devkit layouts, and a
folder with no download, each prepared from a tiny fake (tests/fake_stanford_cars.py; the
Kaggle layout is the recipe tests' download)."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from carjax.data.stanford_cars import layouts
from carjax.data.stanford_cars import recipe
from tests import fake_stanford_cars as fakes


# ---------------------------------------------------------------------------
# Hugging Face layout
# ---------------------------------------------------------------------------


def test_huggingface_layout_with_embedded_names(tmp_path):
  download = tmp_path / "hf"
  # Lower-cased class names, as some mirrors have them.
  names = [name.lower() for name, _ in fakes.CLASSES]
  train = fakes.fake_annotations("train")
  fakes.write_parquet(download / "data/train-00000-of-00002.parquet", train[:20],
                      names)
  fakes.write_parquet(download / "data/train-00001-of-00002.parquet", train[20:],
                      names)
  fakes.write_parquet(download / "data/test-00000-of-00001.parquet",
                      fakes.fake_annotations("test"), names)
  output = tmp_path / "out"
  summary = recipe.prepare(str(download), str(output), num_makes=2,
                           min_images_per_make=1, max_images_per_make=100)
  assert summary.layout == "huggingface"
  rows = fakes.check_output_matches_manifest(output)
  assert {r["make"] for r in rows} == {"Aston_Martin", "Audi"}
  assert len(rows) == 12 + 8  # Train half only; images kept whole.
  assert {(r["width"], r["height"]) for r in rows} == {("48", "32")}
  assert {r["model"] for r in rows if r["stanford_class_id"] == "4"} == {
      "audi s4 sedan 2012"}


def test_huggingface_layout_with_names_in_the_dataset_card(tmp_path):
  pytest.importorskip("yaml")
  download = tmp_path / "hf"
  fakes.write_parquet(download / "data/train-00000-of-00001.parquet",
                      fakes.fake_annotations("train"), [], metadata=False)
  card_names = "\n".join(f"          '{i}': {name}"
                         for i, (name, _) in enumerate(fakes.CLASSES))
  (download / "README.md").write_text(
      "---\ndataset_info:\n  features:\n  - name: image\n    dtype: image\n"
      "  - name: label\n    dtype:\n      class_label:\n        names:\n"
      f"{card_names}\n---\n# Stanford Cars\n")
  output = tmp_path / "out"
  recipe.prepare(str(download), str(output), layout="huggingface",
                 num_makes=1, min_images_per_make=1)
  rows = fakes.check_output_matches_manifest(output)
  assert {r["make"] for r in rows} == {"Aston_Martin"}


# ---------------------------------------------------------------------------
# Devkit layout
# ---------------------------------------------------------------------------


def _annotation_struct(items, bbox=fakes.BBOX) -> np.ndarray:
  dtype = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"),
           ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
  annotations = np.zeros((1, len(items)), dtype=dtype)
  for i, (filename, class_id, _) in enumerate(items):
    annotations[0, i] = (*(np.array([[v]], np.uint16) for v in bbox),
                         np.array([[class_id]], np.uint8), filename)
  return annotations


def test_devkit_layout(tmp_path):
  scipy_io = pytest.importorskip("scipy.io")
  download = tmp_path / "stanford"
  class_names = np.empty((1, len(fakes.CLASSES)), dtype=object)
  class_names[0, :] = [name for name, _ in fakes.CLASSES]
  (download / "devkit").mkdir(parents=True)
  scipy_io.savemat(download / "devkit/cars_meta.mat",
                   {"class_names": class_names})
  items = fakes.fake_annotations("train")
  scipy_io.savemat(download / "devkit/cars_train_annos.mat",
                   {"annotations": _annotation_struct(items)})
  for filename, _, data in items:
    path = download / "cars_train" / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
  assert layouts.detect_layout(str(download)) == "devkit"

  output = tmp_path / "out"
  summary = recipe.prepare(str(download), str(output), num_makes=20,
                           min_images_per_make=5, max_images_per_make=400)
  rows = fakes.check_output_matches_manifest(output)
  assert summary.layout == "devkit"
  assert collections.Counter(r["make"] for r in rows) == {
      "Aston_Martin": 12, "Audi": 8, "Mercedes-Benz": 7}
  assert {(r["width"], r["height"]) for r in rows} == {("36", "24")}
  row = next(r for r in rows if r["stanford_class_id"] == "5")
  assert row["model"] == "Mercedes-Benz Sprinter Van 2012"
  assert row["source"].startswith("cars_train/")


# ---------------------------------------------------------------------------
# No download
# ---------------------------------------------------------------------------


def test_no_download_found_says_what_to_do(tmp_path):
  (tmp_path / "in").mkdir()
  (tmp_path / "in" / "readme.txt").write_text("nothing here")
  with pytest.raises(layouts.NoStanfordCarsError) as info:
    recipe.prepare(str(tmp_path / "in"), str(tmp_path / "out"))
  assert "kaggle" in str(info.value) and "--input" in str(info.value)

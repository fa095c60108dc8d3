"""Tests for carjax.data.prepare and launch.prepare_data on synthetic downloads.

Each test writes a tiny fake Stanford Cars download in one of the three
layouts (random-noise JPEGs, so no two are near duplicates by accident, and
fake annotation files), prepares it, and checks the output folder.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from carjax.data import prepare
from carjax.data.sources import ImageFolderSource

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Stanford-style class names (1-based ids = position + 1) and how many
# training images each gets in the fake downloads.
CLASSES = [
    ("AM General Hummer SUV 2000", 4),
    ("Aston Martin V8 Vantage Coupe 2012", 9),
    ("Aston Martin Virage Coupe 2012", 3),
    ("Audi S4 Sedan 2012", 8),
    ("Mercedes-Benz Sprinter Van 2012", 7),
    ("Ram C/V Cargo Van Minivan 2012", 2),
]
IMAGE_SIZE = (48, 32)
BBOX = (5, 4, 40, 27)  # 1-based inclusive: a 36 x 24 crop.


def _noise_jpeg(seed: int, size=IMAGE_SIZE, quality=92) -> bytes:
  rng = np.random.default_rng(seed)
  # Blocky noise survives JPEG well and gives every image a distinct hash.
  small = rng.integers(0, 256, (size[1] // 4, size[0] // 4, 3), np.uint8)
  image = Image.fromarray(small).resize(size, Image.Resampling.NEAREST)
  buffer = io.BytesIO()
  image.save(buffer, "JPEG", quality=quality)
  return buffer.getvalue()


def _fake_annotations(half: str = "train"):
  """(filename, class_id, jpeg bytes) for every fake image of a half."""
  items, counter = [], 0
  for class_id, (_, count) in enumerate(CLASSES, start=1):
    if half == "test":
      count = 2
    for _ in range(count):
      counter += 1
      seed = counter + (10_000 if half == "test" else 0)
      items.append((f"{counter:05d}.jpg", class_id, _noise_jpeg(seed)))
  return items


def _read_manifest(output: pathlib.Path) -> list[dict]:
  with open(output / "MANIFEST.csv", newline="") as f:
    return list(csv.DictReader(f))


def _check_output_matches_manifest(output: pathlib.Path) -> list[dict]:
  rows = _read_manifest(output)
  assert list(rows[0]) == list(prepare.MANIFEST_COLUMNS)
  files = sorted(str(p.relative_to(output)) for p in output.rglob("*.jpg"))
  assert files == sorted(r["relpath"] for r in rows)
  for row in rows:
    with Image.open(output / row["relpath"]) as image:
      assert image.size == (int(row["width"]), int(row["height"]))
    assert row["relpath"].startswith(f"{row['split']}/{row['make']}/")
  assert len({r["sha256"] for r in rows}) == len(rows)
  return rows


# ---------------------------------------------------------------------------
# Class names -> makes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("model,make", [
    ("Audi S4 Sedan 2012", "Audi"),
    ("AM General Hummer SUV 2000", "AM General"),
    ("Aston Martin V8 Vantage Coupe 2012", "Aston Martin"),
    ("Land Rover LR2 SUV 2012", "Land Rover"),
    ("Mercedes-Benz Sprinter Van 2012", "Mercedes-Benz"),
    ("aston martin virage coupe 2012", "Aston Martin"),
    ("mercedes-benz c-class sedan 2012", "Mercedes-Benz"),
    ("bmw m3 coupe 2012", "BMW"),
    ("0007_Aston_Martin_V8_Vantage_Coupe_2012", "Aston Martin"),
    ("smart fortwo Convertible 2012", "smart"),
    ("Zoomobile X 2030", "Zoomobile"),
])
def test_make_of(model, make):
  assert prepare.make_of(model) == make


def test_make_folder_name():
  assert prepare.make_folder_name("Aston Martin") == "Aston_Martin"
  assert prepare.make_folder_name("Mercedes-Benz") == "Mercedes-Benz"


# ---------------------------------------------------------------------------
# Kaggle layout
# ---------------------------------------------------------------------------


def _write_kaggle(root: pathlib.Path, *, with_test: bool = True) -> None:
  images_root = root / "car_data" / "car_data"
  for half in ("train", "test") if with_test else ("train",):
    lines = []
    for filename, class_id, data in _fake_annotations(half):
      # The mirror's folder names replace '/' (Ram C/V -> Ram C-V).
      folder = CLASSES[class_id - 1][0].replace("/", "-")
      path = images_root / half / folder / filename
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_bytes(data)
      lines.append(f"{filename},{','.join(map(str, BBOX))},{class_id}")
    (root / f"anno_{half}.csv").write_text("\n".join(lines) + "\n")
  (root / "names.csv").write_text("\n".join(name for name, _ in CLASSES) + "\n")


def test_kaggle_layout(tmp_path):
  download = tmp_path / "download"
  _write_kaggle(download)
  audi_dir = download / "car_data/car_data/train/Audi S4 Sedan 2012"
  # An exact duplicate, an unreadable file and an annotated-but-missing file.
  first_audi = sorted(audi_dir.iterdir())[0]
  (audi_dir / "90001.jpg").write_bytes(first_audi.read_bytes())
  (audi_dir / "90002.jpg").write_bytes(b"not a jpeg")
  with open(download / "anno_train.csv", "a") as f:
    f.write(f"90001.jpg,{','.join(map(str, BBOX))},4\n")
    f.write(f"90002.jpg,{','.join(map(str, BBOX))},4\n")
    f.write(f"90003.jpg,{','.join(map(str, BBOX))},4\n")

  output = tmp_path / "out"
  summary = prepare.prepare(
      str(download), str(output), num_makes=3, min_images_per_make=5,
      max_images_per_make=10, seed=1, val_fraction=0.25, test_fraction=0.25)
  assert summary.layout == "kaggle"
  assert summary.exact_duplicates == 1
  assert [os.path.basename(n) for n, _ in summary.unreadable] == ["90002.jpg"]
  assert summary.missing_files == 1
  # Aston Martin 12, Audi 8, Mercedes-Benz 7 are the top 3; AM General (4)
  # and Ram (2) fall below the minimum of 5.
  assert summary.dropped_makes == ["AM General", "Ram"]

  rows = _check_output_matches_manifest(output)
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
  prepare.prepare(str(download), str(again), num_makes=3,
                  min_images_per_make=5, max_images_per_make=10, seed=1,
                  val_fraction=0.25, test_fraction=0.25)
  assert _read_manifest(again) == rows


def test_kaggle_both_halves_and_short_side_cap(tmp_path):
  download = tmp_path / "download"
  _write_kaggle(download)
  output = tmp_path / "out"
  summary = prepare.prepare(str(download), str(output), layout="kaggle",
                            halves=("train", "test"), num_makes=2,
                            min_images_per_make=1, max_short_side=12)
  rows = _check_output_matches_manifest(output)
  assert summary.counts and len({r["make"] for r in rows}) == 2
  names = {r["relpath"].split("/")[-1][:15] for r in rows}
  assert names == {"stanford_train_", "stanford_test_0"}
  assert {(r["width"], r["height"]) for r in rows} == {("18", "12")}


def test_near_duplicates_stay_in_one_split(tmp_path):
  download = tmp_path / "download"
  _write_kaggle(download, with_test=False)
  # The same photo again under another file name, re-encoded at another
  # quality: not byte-identical, but a near duplicate.
  source_file = sorted(
      (download / "car_data/car_data/train/Audi S4 Sedan 2012").iterdir())[0]
  photo = Image.open(source_file)
  copy = download / "car_data/car_data/train/Audi S4 Sedan 2012/80001.jpg"
  photo.save(copy, "JPEG", quality=60)
  with open(download / "anno_train.csv", "a") as f:
    f.write(f"80001.jpg,{','.join(map(str, BBOX))},4\n")
  output = tmp_path / "out"
  summary = prepare.prepare(str(download), str(output), min_images_per_make=1,
                            val_fraction=0.3, test_fraction=0.3, seed=5)
  assert summary.near_duplicate_groups == 1
  rows = _read_manifest(output)
  grouped = [r for r in rows if r["near_dup_group"]]
  assert len(grouped) == 2
  assert grouped[0]["split"] == grouped[1]["split"]
  assert grouped[0]["near_dup_group"] == grouped[1]["near_dup_group"]


def test_difference_hash_tolerates_resizing_not_other_photos():
  photo = np.asarray(Image.open(io.BytesIO(_noise_jpeg(1, size=(96, 64)))))
  smaller = np.asarray(Image.fromarray(photo).resize((72, 48)))
  other = np.asarray(Image.open(io.BytesIO(_noise_jpeg(2, size=(96, 64)))))
  hashes = np.stack([prepare.difference_hash(a)
                     for a in (photo, smaller, other)])
  groups = prepare.group_near_duplicates(hashes,
                                         prepare.NEAR_DUPLICATE_MAX_BITS)
  assert groups == [0, 0, 2]


# ---------------------------------------------------------------------------
# Hugging Face layout
# ---------------------------------------------------------------------------


def _write_parquet(path: pathlib.Path, items, class_names, *, metadata=True):
  pa = pytest.importorskip("pyarrow")
  pq = pytest.importorskip("pyarrow.parquet")
  table = pa.table({
      "image": pa.array([{"bytes": data, "path": name}
                         for name, _, data in items],
                        type=pa.struct([("bytes", pa.binary()),
                                        ("path", pa.string())])),
      "label": pa.array([class_id - 1 for _, class_id, _ in items], pa.int64()),
  })
  if metadata:
    info = {"info": {"features": {
        "image": {"_type": "Image"},
        "label": {"names": class_names, "_type": "ClassLabel"}}}}
    table = table.replace_schema_metadata(
        {"huggingface": json.dumps(info)})
  path.parent.mkdir(parents=True, exist_ok=True)
  pq.write_table(table, path)


def test_huggingface_layout_with_embedded_names(tmp_path):
  download = tmp_path / "hf"
  # Lower-cased class names, as some mirrors have them.
  names = [name.lower() for name, _ in CLASSES]
  train = _fake_annotations("train")
  _write_parquet(download / "data/train-00000-of-00002.parquet", train[:20],
                 names)
  _write_parquet(download / "data/train-00001-of-00002.parquet", train[20:],
                 names)
  _write_parquet(download / "data/test-00000-of-00001.parquet",
                 _fake_annotations("test"), names)
  output = tmp_path / "out"
  summary = prepare.prepare(str(download), str(output), num_makes=2,
                            min_images_per_make=1, max_images_per_make=100)
  assert summary.layout == "huggingface"
  rows = _check_output_matches_manifest(output)
  assert {r["make"] for r in rows} == {"Aston_Martin", "Audi"}
  assert len(rows) == 12 + 8  # Train half only; images kept whole.
  assert {(r["width"], r["height"]) for r in rows} == {("48", "32")}
  assert {r["model"] for r in rows if r["stanford_class_id"] == "4"} == {
      "audi s4 sedan 2012"}


def test_huggingface_layout_with_names_in_the_dataset_card(tmp_path):
  pytest.importorskip("yaml")
  download = tmp_path / "hf"
  _write_parquet(download / "data/train-00000-of-00001.parquet",
                 _fake_annotations("train"), [], metadata=False)
  card_names = "\n".join(f"          '{i}': {name}"
                         for i, (name, _) in enumerate(CLASSES))
  (download / "README.md").write_text(
      "---\ndataset_info:\n  features:\n  - name: image\n    dtype: image\n"
      "  - name: label\n    dtype:\n      class_label:\n        names:\n"
      f"{card_names}\n---\n# Stanford Cars\n")
  output = tmp_path / "out"
  prepare.prepare(str(download), str(output), layout="huggingface",
                  num_makes=1, min_images_per_make=1)
  rows = _check_output_matches_manifest(output)
  assert {r["make"] for r in rows} == {"Aston_Martin"}


# ---------------------------------------------------------------------------
# Devkit layout
# ---------------------------------------------------------------------------


def _annotation_struct(items, bbox=BBOX) -> np.ndarray:
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
  class_names = np.empty((1, len(CLASSES)), dtype=object)
  class_names[0, :] = [name for name, _ in CLASSES]
  (download / "devkit").mkdir(parents=True)
  scipy_io.savemat(download / "devkit/cars_meta.mat",
                   {"class_names": class_names})
  items = _fake_annotations("train")
  scipy_io.savemat(download / "devkit/cars_train_annos.mat",
                   {"annotations": _annotation_struct(items)})
  for filename, _, data in items:
    path = download / "cars_train" / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
  assert prepare.detect_layout(str(download)) == "devkit"

  output = tmp_path / "out"
  summary = prepare.prepare(str(download), str(output), num_makes=20,
                            min_images_per_make=5, max_images_per_make=400)
  rows = _check_output_matches_manifest(output)
  assert summary.layout == "devkit"
  assert collections.Counter(r["make"] for r in rows) == {
      "Aston_Martin": 12, "Audi": 8, "Mercedes-Benz": 7}
  assert {(r["width"], r["height"]) for r in rows} == {("36", "24")}
  row = next(r for r in rows if r["stanford_class_id"] == "5")
  assert row["model"] == "Mercedes-Benz Sprinter Van 2012"
  assert row["source"].startswith("cars_train/")


# ---------------------------------------------------------------------------
# Errors and the launcher
# ---------------------------------------------------------------------------


def test_no_download_found_says_what_to_do(tmp_path):
  (tmp_path / "in").mkdir()
  (tmp_path / "in" / "readme.txt").write_text("nothing here")
  with pytest.raises(prepare.NoStanfordCarsError) as info:
    prepare.prepare(str(tmp_path / "in"), str(tmp_path / "out"))
  assert "kaggle" in str(info.value) and "--input" in str(info.value)


def test_refuses_non_empty_output(tmp_path):
  download = tmp_path / "download"
  _write_kaggle(download, with_test=False)
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "keep.txt").write_text("mine")
  with pytest.raises(FileExistsError, match="not an empty folder"):
    prepare.prepare(str(download), str(tmp_path / "out"))


def test_launcher_without_input_prints_instructions():
  completed = subprocess.run(
      [sys.executable, "-m", "launch.prepare_data"], cwd=REPO_ROOT,
      capture_output=True, text=True, timeout=120, check=False)
  assert completed.returncode == 2
  assert "python -m launch.prepare_data --input=DIR" in completed.stderr
  assert "kaggle" in completed.stderr


def test_launcher_prepares_a_download(tmp_path):
  download = tmp_path / "download"
  _write_kaggle(download, with_test=False)
  completed = subprocess.run(
      [sys.executable, "-m", "launch.prepare_data", f"--input={download}",
       f"--output={tmp_path / 'out'}", "--images=recipe", "--num_makes=2",
       "--min_images_per_make=1", "--seed=3"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert completed.returncode == 0, completed.stderr
  assert "2 makes" in completed.stdout
  assert (tmp_path / "out" / "MANIFEST.csv").exists()

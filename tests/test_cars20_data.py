"""cars20 from a public download: the shipped id list, rebuilding by id, the mirror clients.

The downloads are small fakes in the mirrors' own layouts (tests.fake_stanford_cars writes
them); the mirror clients are replaced by fakes, so nothing here touches the network.
"""

from __future__ import annotations

import collections
import csv
import io
import pathlib
import subprocess
import sys
import types

import numpy as np
from PIL import Image
import pytest

from carjax.data import cars20
from carjax.data import download
from carjax.data.stanford_cars import layouts
from carjax.data.stanford_cars import makes
from carjax.data.sources import ImageFolderSource
from tests.conftest import REPO_ROOT, require_shared
from tests import fake_stanford_cars as fakes

# Fake downloads number their train images 00001.. over the classes of
# tests.fake_stanford_cars.CLASSES: 1-4 AM General, 5-13 Aston Martin V8, 14-16 Aston Martin
# Virage, 17-24 Audi S4, 25-31 Mercedes Sprinter, 32-33 Ram C/V.
LISTED = [
    cars20.ImageId("train", "AM_General", "train", "00002.jpg", 1),
    cars20.ImageId("val", "Aston_Martin", "train", "00007.jpg", 2),
    cars20.ImageId("train", "Aston_Martin", "train", "00015.jpg", 3),
    cars20.ImageId("train", "Audi", "train", "00018.jpg", 4),
    cars20.ImageId("val", "Audi", "train", "00020.jpg", 4),
    cars20.ImageId("train", "Ram", "train", "00033.jpg", 6),
]
NOT_IN_DOWNLOAD = cars20.ImageId("train", "Audi", "train", "00099.jpg", 4)


def _relpaths(output: pathlib.Path) -> list[str]:
  return sorted(str(p.relative_to(output)) for p in output.rglob("*.jpg"))


def test_shipped_id_list_is_the_reference_selection():
  ids = cars20.read_ids()
  assert collections.Counter(i.split for i in ids) == {"train": 3605, "val": 779}
  assert len({i.make for i in ids}) == 20
  assert len({(i.stanford_half, i.stanford_file) for i in ids}) == len(ids)
  assert {i.stanford_half for i in ids} == {"train"}  # cars20 uses Stanford's train half.
  # Every make is one of Stanford's, spelled as a folder name.
  folders = {makes.make_folder_name(m) for m in makes.STANFORD_MAKES}
  assert {i.make for i in ids} <= folders


def test_shipped_id_list_matches_the_manifest():
  manifest = require_shared("cars20", "MANIFEST.csv")
  assert cars20.ids_from_manifest(str(manifest)) == cars20.read_ids()


def test_build_from_the_kaggle_layout_writes_the_listed_crops(tmp_path):
  download_dir = tmp_path / "kaggle"
  fakes.write_kaggle(download_dir)
  output = tmp_path / "cars20"
  summary = cars20.build(str(download_dir), str(output), ids=LISTED + [NOT_IN_DOWNLOAD],
                         num_workers=2)
  assert summary.layout == "kaggle"
  assert summary.written == {"train": 4, "val": 2}
  assert summary.missing == [NOT_IN_DOWNLOAD]
  assert "1 listed images are not in the download" in summary.describe()
  assert _relpaths(output) == sorted(f"{i.split}/{i.make}/stanford_train_{i.stanford_file}"
                                     for i in LISTED)
  # Cropped to the devkit box (1-based inclusive) like cars20: the crop of the source.
  source_bytes = dict((name, data) for name, _, data in fakes.fake_annotations("train"))
  x1, y1, x2, y2 = fakes.BBOX
  for image_id in LISTED:
    written = np.asarray(Image.open(
        output / image_id.split / image_id.make / f"stanford_train_{image_id.stanford_file}"
    ).convert("L"), np.float32)
    source = Image.open(io.BytesIO(source_bytes[image_id.stanford_file])).convert("L")
    crop = lambda dx: np.asarray(source.crop((x1 - 1 + dx, y1 - 1, x2 + dx, y2)), np.float32)
    assert written.shape == crop(0).shape == (24, 36)
    # One JPEG re-encoding from the box's crop, far from a crop shifted by one noise block.
    assert np.abs(written - crop(0)).mean() < 0.5 * np.abs(written - crop(4)).mean()
    assert np.abs(written - crop(0)).mean() < 8
  with open(output / "MANIFEST.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == len(LISTED)
  assert {r["model"] for r in rows if r["stanford_class_id"] == "4"} == {"Audi S4 Sedan 2012"}
  source = ImageFolderSource(output)
  assert source.class_names == ("AM_General", "Aston_Martin", "Audi", "Ram")
  assert source.splits == ("train", "val")


def test_build_from_a_huggingface_mirror_that_kept_file_names(tmp_path):
  names = [name for name, _ in fakes.CLASSES]
  fakes.write_parquet(tmp_path / "hf/data/train-00000-of-00001.parquet",
                      fakes.fake_annotations("train"), names)
  output = tmp_path / "cars20"
  summary = cars20.build(str(tmp_path / "hf"), str(output), ids=LISTED, num_workers=2)
  assert summary.layout == "huggingface" and not summary.missing
  assert len(_relpaths(output)) == len(LISTED)
  # No boxes in such mirrors: whole images.
  with Image.open(output / "train/Ram/stanford_train_00033.jpg") as image:
    assert image.size == (48, 32)


def test_build_refuses_a_download_whose_labels_differ(tmp_path):
  fakes.write_kaggle(tmp_path / "kaggle", with_test=False)
  relabelled = [cars20.ImageId("train", "Audi", "train", "00002.jpg", 4)]
  with pytest.raises(ValueError, match="not Stanford's ids"):
    cars20.build(str(tmp_path / "kaggle"), str(tmp_path / "out"), ids=relabelled)


def test_build_says_when_no_listed_image_is_there(tmp_path):
  fakes.write_kaggle(tmp_path / "kaggle", with_test=False)
  with pytest.raises(layouts.NoStanfordCarsError, match="--images=recipe"):
    cars20.build(str(tmp_path / "kaggle"), str(tmp_path / "out"), ids=[NOT_IN_DOWNLOAD])


def test_download_uses_the_mirror_clients(monkeypatch, tmp_path):
  calls = []
  fake_kagglehub = types.SimpleNamespace(
      dataset_download=lambda handle, **kw: calls.append(("kaggle", handle, kw)) or "/k")
  fake_hub = types.SimpleNamespace(
      snapshot_download=lambda **kw: calls.append(("hf", kw["repo_id"], kw)) or "/h")
  monkeypatch.setitem(sys.modules, "kagglehub", fake_kagglehub)
  monkeypatch.setitem(sys.modules, "huggingface_hub", fake_hub)
  assert download.download("kaggle") == "/k"
  assert download.download("huggingface:someone/stanford_cars", str(tmp_path)) == "/h"
  assert calls[0] == ("kaggle", download.KAGGLE_HANDLE, {})
  assert calls[1][1] == "someone/stanford_cars"
  assert calls[1][2]["repo_type"] == "dataset" and calls[1][2]["local_dir"] == str(tmp_path)
  with pytest.raises(ValueError, match="expected one of"):
    download.download("dropbox")


def test_launcher_builds_cars20_by_default_and_reports_a_foreign_download(tmp_path):
  fakes.write_kaggle(tmp_path / "kaggle", with_test=False)
  # The fake download's files are named like Stanford's but labelled otherwise: refused.
  completed = subprocess.run(
      [sys.executable, "-m", "launch.prepare_data", f"--input={tmp_path / 'kaggle'}",
       f"--output={tmp_path / 'out'}"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert completed.returncode == 2
  assert "Traceback" not in completed.stderr
  assert "--images=recipe" in completed.stderr

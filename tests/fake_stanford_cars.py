"""Tiny fake Stanford Cars downloads in the mirrors' own layouts, and the check of a prepared
folder; shared by the tests of carjax.data.stanford_cars, carjax.data.cars20 and
launch.prepare_data.

The images are random-noise JPEGs, so no two are near duplicates by accident; the annotation
files are fakes in each layout's format.
"""

from __future__ import annotations

import csv
import io
import json
import pathlib

import numpy as np
from PIL import Image
import pytest

from carjax.data.stanford_cars import recipe

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


def noise_jpeg(seed: int, size=IMAGE_SIZE, quality=92) -> bytes:
  rng = np.random.default_rng(seed)
  # Blocky noise survives JPEG well and gives every image a distinct hash.
  small = rng.integers(0, 256, (size[1] // 4, size[0] // 4, 3), np.uint8)
  image = Image.fromarray(small).resize(size, Image.Resampling.NEAREST)
  buffer = io.BytesIO()
  image.save(buffer, "JPEG", quality=quality)
  return buffer.getvalue()


def fake_annotations(half: str = "train"):
  """(filename, class_id, jpeg bytes) for every fake image of a half."""
  items, counter = [], 0
  for class_id, (_, count) in enumerate(CLASSES, start=1):
    if half == "test":
      count = 2
    for _ in range(count):
      counter += 1
      seed = counter + (10_000 if half == "test" else 0)
      items.append((f"{counter:05d}.jpg", class_id, noise_jpeg(seed)))
  return items


def read_manifest(output: pathlib.Path) -> list[dict]:
  with open(output / "MANIFEST.csv", newline="") as f:
    return list(csv.DictReader(f))


def check_output_matches_manifest(output: pathlib.Path) -> list[dict]:
  rows = read_manifest(output)
  assert list(rows[0]) == list(recipe.MANIFEST_COLUMNS)
  files = sorted(str(p.relative_to(output)) for p in output.rglob("*.jpg"))
  assert files == sorted(r["relpath"] for r in rows)
  for row in rows:
    with Image.open(output / row["relpath"]) as image:
      assert image.size == (int(row["width"]), int(row["height"]))
    assert row["relpath"].startswith(f"{row['split']}/{row['make']}/")
  assert len({r["sha256"] for r in rows}) == len(rows)
  return rows


def write_kaggle(root: pathlib.Path, *, with_test: bool = True) -> None:
  images_root = root / "car_data" / "car_data"
  for half in ("train", "test") if with_test else ("train",):
    lines = []
    for filename, class_id, data in fake_annotations(half):
      # The mirror's folder names replace '/' (Ram C/V -> Ram C-V).
      folder = CLASSES[class_id - 1][0].replace("/", "-")
      path = images_root / half / folder / filename
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_bytes(data)
      lines.append(f"{filename},{','.join(map(str, BBOX))},{class_id}")
    (root / f"anno_{half}.csv").write_text("\n".join(lines) + "\n")
  (root / "names.csv").write_text("\n".join(name for name, _ in CLASSES) + "\n")


def write_parquet(path: pathlib.Path, items, class_names, *, metadata=True):
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

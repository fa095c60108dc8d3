"""cars20 from a public Stanford Cars download: the same train and val images, found by id.

The reference data set cars20 (20 makes, 3,605 train and 779 val images; see RESULTS.md) was
built from the training half of Stanford Cars with the recipe of
`carjax.data.stanford_cars.recipe`. The project ships which Stanford images it holds and where
(`cars20_ids.csv`: split, make, Stanford half, Stanford file name, Stanford class id; ids only,
never images). `build` reads a download in any layout of `carjax.data.stanford_cars.layouts`
that keeps Stanford's file names (the Kaggle mirror, the original devkit, a Hugging Face mirror
whose image paths are those names), picks those images and writes them as cars20 was written:
cropped to the devkit's bounding box, short side at most 256 px, JPEG quality 90, in
``<output>/<split>/<Make>/stanford_train_NNNNN.jpg`` with a ``MANIFEST.csv``. Pixels can differ
slightly from the reference copy (it was re-encoded from another copy of the photos), which is
why images are matched by id and not by hash.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import os
import re
from typing import Sequence

from absl import logging
import tqdm

from carjax.data import decode
from carjax.data.stanford_cars import layouts
from carjax.data.stanford_cars import recipe

IDS_FILE = os.path.join(os.path.dirname(__file__), "cars20_ids.csv")
IDS_COLUMNS = ("split", "make", "stanford_half", "stanford_file", "stanford_class_id")
_MANIFEST_NAME = re.compile(r"^(?P<split>[^/]+)/(?P<make>[^/]+)/stanford_(?P<half>train|test)_"
                            r"(?P<number>\d{5})\.jpg$")


@dataclasses.dataclass(frozen=True)
class ImageId:
  split: str
  make: str  # The folder name, e.g. "Aston_Martin".
  stanford_half: str  # "train" or "test".
  stanford_file: str  # e.g. "00069.jpg".
  stanford_class_id: int  # 1-based, as in the devkit.

  @property
  def output_stem(self) -> str:
    """The file name the layout readers give this image (without extension)."""
    return f"stanford_{self.stanford_half}_{os.path.splitext(self.stanford_file)[0]}"


@dataclasses.dataclass
class BuildSummary:
  output: str
  layout: str
  written: dict[str, int]  # split -> images
  missing: list[ImageId]  # in the list, not in the download
  unreadable: list[tuple[str, str]]

  def describe(self) -> str:
    total = sum(self.written.values()) + len(self.missing) + len(self.unreadable)
    lines = [f"Wrote {self.output} from the {self.layout} layout: "
             + ", ".join(f"{split} {n}" for split, n in self.written.items())
             + f" images ({sum(self.written.values())} of the {total} listed in cars20)."]
    if self.missing:
      shown = ", ".join(f"{i.stanford_half}/{i.stanford_file}" for i in self.missing[:5])
      lines.append(f"  {len(self.missing)} listed images are not in the download "
                   f"(e.g. {shown}); results will differ slightly from the published ones.")
    for name, reason in self.unreadable:
      lines.append(f"  unreadable: {name}: {reason}")
    return "\n".join(lines)


def read_ids(path: str = IDS_FILE) -> list[ImageId]:
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    if tuple(reader.fieldnames or ()) != IDS_COLUMNS:
      raise ValueError(f"{path}: expected the columns {IDS_COLUMNS}, got {reader.fieldnames}")
    return [ImageId(r["split"], r["make"], r["stanford_half"], r["stanford_file"],
                    int(r["stanford_class_id"])) for r in reader]


def ids_from_manifest(manifest_path: str) -> list[ImageId]:
  """The id list of a cars20-style MANIFEST.csv (how `cars20_ids.csv` was made)."""
  ids = []
  with open(manifest_path, newline="", encoding="utf-8") as f:
    for row in csv.DictReader(f):
      match = _MANIFEST_NAME.match(row["relpath"])
      if match is None:
        raise ValueError(f"{manifest_path}: {row['relpath']!r} is not named "
                         "<split>/<Make>/stanford_<half>_NNNNN.jpg")
      ids.append(ImageId(row["split"], row["make"], match["half"], f"{match['number']}.jpg",
                         int(row["stanford_class_id"])))
  return ids


def write_ids(ids: Sequence[ImageId], path: str) -> None:
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(IDS_COLUMNS)
    for i in ids:
      writer.writerow([i.split, i.make, i.stanford_half, i.stanford_file, i.stanford_class_id])


def _check_labels(wanted: Sequence[ImageId], found: dict[str, layouts.SourceImage]) -> None:
  """Fails when the download labels an image differently: its file names are not Stanford's."""
  wrong = [(i, found[i.output_stem]) for i in wanted
           if i.output_stem in found and found[i.output_stem].class_id != i.stanford_class_id]
  if wrong:
    examples = "; ".join(f"{i.stanford_file}: class {i.stanford_class_id} in cars20, "
                         f"{image.class_id} in {image.name}" for i, image in wrong[:3])
    raise ValueError(f"{len(wrong)} images carry another Stanford class in the download than "
                     f"in cars20 ({examples}): its file names are not Stanford's ids, so it "
                     "cannot rebuild cars20. Use --images=recipe to build a similar set.")


def build(input_dir: str, output_dir: str, *, layout: str = "auto",
          ids: Sequence[ImageId] | None = None, max_short_side: int = 256,
          num_workers: int | None = None) -> BuildSummary:
  """Writes the listed images of a Stanford Cars download as cars20 was written."""
  ids = read_ids() if ids is None else list(ids)
  input_dir = os.path.abspath(os.path.expanduser(input_dir))
  output_dir = os.path.abspath(os.path.expanduser(output_dir))
  if not os.path.isdir(input_dir):
    raise layouts.NoStanfordCarsError(layouts.INSTRUCTIONS.format(
        where=f": {input_dir} is not a folder"))
  recipe.check_output_dir(output_dir)
  if layout == "auto":
    layout = layouts.detect_layout(input_dir)
  halves = sorted({i.stanford_half for i in ids})
  images, _ = layouts.READERS[layout](input_dir, halves)
  found = {image.output_stem: image for image in images}
  _check_labels(ids, found)
  present = [i for i in ids if i.output_stem in found]
  missing = [i for i in ids if i.output_stem not in found]
  if not present:
    raise layouts.NoStanfordCarsError(
        f"None of cars20's {len(ids)} Stanford images (e.g. {ids[0].stanford_half}/"
        f"{ids[0].stanford_file}) is in the {layout} download at {input_dir}: this copy does "
        "not keep Stanford's file names. Use the Kaggle mirror (--download=kaggle), or "
        "--images=recipe to build a similar set from this one.")

  def work(image_id: ImageId):
    try:
      return recipe.process_image(found[image_id.output_stem], max_short_side)
    except decode.UnreadableImageError as e:
      return e
  with concurrent.futures.ThreadPoolExecutor(num_workers or os.cpu_count() or 1) as pool:
    results = list(tqdm.tqdm(pool.map(work, present), total=len(present),
                             desc="crop+encode", unit="img", disable=None))
  return _write(output_dir, layout, input_dir, found, present, results, missing)


def _write(output_dir, layout, input_dir, found, present, results, missing) -> BuildSummary:
  rows, unreadable = [], []
  written: dict[str, int] = collections.Counter()
  for image_id, result in zip(present, results, strict=True):
    source = found[image_id.output_stem]
    if isinstance(result, decode.UnreadableImageError):
      unreadable.append((result.name, result.reason))
      continue
    relpath = f"{image_id.split}/{image_id.make}/{image_id.output_stem}.jpg"
    path = os.path.join(output_dir, relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(result.jpeg)
    written[image_id.split] += 1
    rows.append({"split": image_id.split, "make": image_id.make, "relpath": relpath,
                 "sha256": result.sha256, "width": result.width, "height": result.height,
                 "stanford_class_id": image_id.stanford_class_id, "model": source.model,
                 "near_dup_group": "",
                 "source": os.path.relpath(source.name, input_dir)})
  for name, reason in unreadable:
    logging.warning("Skipping unreadable image %s: %s", name, reason)
  # Written last: its presence means the folder is complete.
  manifest_path = os.path.join(output_dir, "MANIFEST.csv")
  with open(manifest_path + ".tmp", "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=recipe.MANIFEST_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(manifest_path + ".tmp", manifest_path)
  return BuildSummary(output=output_dir, layout=layout,
                      written=dict(sorted(written.items(), key=lambda kv: kv[0] != "train")),
                      missing=missing, unreadable=unreadable)

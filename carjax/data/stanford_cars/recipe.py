"""The cars20 recipe: a make-labelled image folder from a Stanford Cars download.

`prepare` reads the download (`layouts`), then (see ../shared/data/README.md):

1. label each image with its make: the first word of the Stanford class name,
   except the two-word makes AM General, Aston Martin and Land Rover;
2. remove exact duplicates (sha256 of the downloaded file);
3. keep the `num_makes` makes with the most images (at least
   `min_images_per_make`), at most `max_images_per_make` per make, spread
   evenly over the make's models;
4. crop to the bounding box where the annotations give one, shrink so the
   short side is at most `max_short_side`, re-encode as JPEG quality 90;
5. group near-duplicate photos (the same photo at another size or with other
   labels), then split train/val/test per Stanford model class with a fixed
   seed, each near-duplicate group inside one split;
6. write ``<output>/{train,val,test}/<Make>/<file>.jpg`` and ``MANIFEST.csv``.

By default only Stanford's training half is used, as for cars20; pass
``halves=("train", "test")`` to use both.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import hashlib
import io
import os
from typing import Sequence

from absl import logging
import numpy as np
from PIL import Image
import tqdm

from carjax.data import decode
from carjax.data.splits import TEST, TRAIN, VAL, seeded_rng, stratified_split
from carjax.data.stanford_cars.dedup import (NEAR_DUPLICATE_MAX_BITS, difference_hash,
                                             group_near_duplicates, remove_exact_duplicates)
from carjax.data.stanford_cars.layouts import (INSTRUCTIONS, LAYOUTS, READERS,
                                               NoStanfordCarsError, SourceImage, detect_layout)
from carjax.data.stanford_cars.makes import make_folder_name, make_of

MANIFEST_COLUMNS = ("split", "make", "relpath", "sha256", "width", "height",
                    "stanford_class_id", "model", "near_dup_group", "source")
JPEG_QUALITY = 90


@dataclasses.dataclass
class PrepareSummary:
  layout: str
  output: str
  counts: dict[str, dict[str, int]]  # split -> make -> images
  annotated: int
  exact_duplicates: int
  unreadable: list[tuple[str, str]]
  missing_files: int
  near_duplicate_groups: int
  dropped_makes: list[str]

  def describe(self) -> str:
    makes = sorted({m for c in self.counts.values() for m in c})
    lines = [f"Wrote {self.output} from the {self.layout} layout: "
             f"{len(makes)} makes."]
    for split, per_make in self.counts.items():
      if per_make:
        lines.append(f"  {split}: {sum(per_make.values())} images, "
                     f"{min(per_make.values())}..{max(per_make.values())} "
                     "per make")
    lines.append(
        f"  {self.annotated} annotated images read; {self.exact_duplicates} "
        f"exact duplicates removed; {len(self.unreadable)} unreadable; "
        f"{self.missing_files} annotated files missing; "
        f"{self.near_duplicate_groups} near-duplicate groups kept together.")
    if self.dropped_makes:
      lines.append(f"  Makes not kept: {', '.join(self.dropped_makes)}")
    return "\n".join(lines)


def select_makes(images: Sequence[SourceImage], *, num_makes: int,
                 min_images_per_make: int, max_images_per_make: int,
                 seed: int) -> tuple[list[SourceImage], list[str]]:
  """Keeps the top makes by image count and caps each, spread over models.

  The cap is water-filled over the make's models: every model gets the same
  share, and models with fewer images than their share pass the rest on, so
  a make's popular models do not crowd out its rare ones. Which images of a
  model are kept is a seeded shuffle.

  Returns:
    (kept images, sorted; names of makes not kept).
  """
  by_make: dict[str, list[SourceImage]] = collections.defaultdict(list)
  for image in images:
    by_make[make_of(image.model)].append(image)
  ranked = sorted(by_make, key=lambda m: (-len(by_make[m]), m))
  kept_makes = [m for m in ranked if len(by_make[m]) >= min_images_per_make]
  kept_makes = kept_makes[:num_makes]
  dropped = sorted(set(ranked) - set(kept_makes))

  kept: list[SourceImage] = []
  for make in kept_makes:
    by_model: dict[int, list[SourceImage]] = collections.defaultdict(list)
    for image in by_make[make]:
      by_model[image.class_id].append(image)
    for class_id, members in by_model.items():
      members.sort(key=lambda i: i.name)
      order = seeded_rng(seed, f"cap/{class_id}").permutation(len(members))
      by_model[class_id] = [members[i] for i in order]
    quota = {c: 0 for c in by_model}
    remaining = min(max_images_per_make, len(by_make[make]))
    while remaining > 0:
      # Round-robin, one image per model per round, in class-id order.
      for class_id in sorted(by_model):
        if remaining and quota[class_id] < len(by_model[class_id]):
          quota[class_id] += 1
          remaining -= 1
    for class_id, members in by_model.items():
      kept.extend(members[:quota[class_id]])
  return sorted(kept, key=lambda i: i.name), dropped


@dataclasses.dataclass
class _Processed:
  jpeg: bytes
  width: int
  height: int
  sha256: str
  dhash: np.ndarray


def _crop_box(bbox, width: int, height: int):
  """Devkit boxes are 1-based and inclusive; PIL boxes 0-based, half-open."""
  x1, y1, x2, y2 = bbox
  left, top = max(0, x1 - 1), max(0, y1 - 1)
  right, bottom = min(width, x2), min(height, y2)
  if right - left < 2 or bottom - top < 2:
    return None
  return left, top, right, bottom


def process_image(image: SourceImage, max_short_side: int) -> _Processed:
  """Decode, hash, crop to the box, shrink, encode as JPEG."""
  rgb = decode.load_rgb(image.read(), name=image.name)
  dhash = difference_hash(rgb)
  pil = Image.fromarray(rgb)
  if image.bbox is not None:
    box = _crop_box(image.bbox, pil.width, pil.height)
    if box is None:
      logging.warning("%s: degenerate bounding box %s for a %dx%d image; "
                      "keeping the whole image.", image.name, image.bbox,
                      pil.width, pil.height)
    else:
      pil = pil.crop(box)
  short_side = min(pil.size)
  if max_short_side and short_side > max_short_side:
    scale = max_short_side / short_side
    pil = pil.resize((max(1, round(pil.width * scale)),
                      max(1, round(pil.height * scale))),
                     Image.Resampling.BICUBIC)
  buffer = io.BytesIO()
  pil.save(buffer, "JPEG", quality=JPEG_QUALITY)
  jpeg = buffer.getvalue()
  return _Processed(jpeg=jpeg, width=pil.width, height=pil.height,
                    sha256=hashlib.sha256(jpeg).hexdigest(), dhash=dhash)


def check_output_dir(output_dir: str) -> None:
  """Refuses an output that exists and is not an empty folder: nothing is overwritten."""
  if os.path.exists(output_dir) and (
      not os.path.isdir(output_dir) or os.listdir(output_dir)):
    raise FileExistsError(
        f"Output {output_dir} exists and is not an empty folder; choose a new "
        "one (nothing is overwritten).")


def prepare(input_dir: str, output_dir: str, *, layout: str = "auto",
            halves: Sequence[str] = (TRAIN,), num_makes: int = 20,
            min_images_per_make: int = 100, max_images_per_make: int = 400,
            seed: int = 0, val_fraction: float = 0.15,
            test_fraction: float = 0.15, max_short_side: int = 256,
            near_duplicate_max_bits: int = NEAR_DUPLICATE_MAX_BITS,
            num_workers: int | None = None) -> PrepareSummary:
  """Builds a make-labelled image folder from a Stanford Cars download.

  See the module docstring for the recipe, and `layouts` for the layouts: read the layout,
  drop exact duplicates, select the makes, crop and encode, split whole near-duplicate groups,
  write the images and MANIFEST.csv. The manifest is written last, so its presence means the
  folder is complete.
  """
  if layout not in LAYOUTS:
    raise ValueError(f"Unknown layout {layout!r}; expected one of {LAYOUTS}.")
  for half in halves:
    if half not in (TRAIN, TEST):
      raise ValueError(f"Unknown Stanford half {half!r}; use train and/or test.")
  input_dir = os.path.abspath(os.path.expanduser(input_dir))
  output_dir = os.path.abspath(os.path.expanduser(output_dir))
  if not os.path.isdir(input_dir):
    raise NoStanfordCarsError(INSTRUCTIONS.format(
        where=f": {input_dir} is not a folder"))
  check_output_dir(output_dir)
  workers = num_workers or os.cpu_count() or 1
  if layout == "auto":
    layout = detect_layout(input_dir)
    logging.info("Detected the %s layout in %s.", layout, input_dir)

  images, missing = READERS[layout](input_dir, halves)
  if not images:
    raise NoStanfordCarsError(
        f"The {layout} layout in {input_dir} gave no images for the "
        f"{'/'.join(halves)} half.")
  annotated = len(images)
  images, exact_duplicates = remove_exact_duplicates(images, workers)
  selected, dropped = select_makes(
      images, num_makes=num_makes, min_images_per_make=min_images_per_make,
      max_images_per_make=max_images_per_make, seed=seed)
  if not selected:
    raise ValueError(f"No make has {min_images_per_make} images "
                     f"(--min_images_per_make) in {input_dir}.")
  pairs, unreadable, same_crops = _crop_and_encode(selected, max_short_side, workers)
  group_of = group_near_duplicates(
      np.stack([r.dhash for _, r in pairs]), near_duplicate_max_bits)
  split_of_unit = _split_groups(pairs, group_of, val_fraction, test_fraction, seed)
  rows = _write_images(pairs, group_of, split_of_unit, input_dir, output_dir)
  _write_manifest(rows, output_dir)

  counts: dict[str, dict[str, int]] = {TRAIN: {}, VAL: {}, TEST: {}}
  for row in rows:
    counts[row["split"]][row["make"]] = counts[row["split"]].get(
        row["make"], 0) + 1
  return PrepareSummary(
      layout=layout, output=output_dir,
      counts={s: dict(sorted(c.items())) for s, c in counts.items()},
      annotated=annotated, exact_duplicates=exact_duplicates + same_crops,
      unreadable=unreadable, missing_files=missing,
      near_duplicate_groups=sum(1 for c in collections.Counter(group_of).values() if c > 1),
      dropped_makes=dropped)


def _crop_and_encode(selected: list[SourceImage], max_short_side: int, workers: int):
  """([(image, processed)] with identical crops dropped, [(name, reason)] unreadable, how
  many identical crops were dropped), processing the images in `workers` threads."""

  def work(image: SourceImage):
    try:
      return process_image(image, max_short_side)
    except decode.UnreadableImageError as e:
      return e
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    results = list(tqdm.tqdm(pool.map(work, selected), total=len(selected),
                             desc="crop+encode", unit="img"))
  unreadable = [(e.name, e.reason) for e in results
                if isinstance(e, decode.UnreadableImageError)]
  for name, reason in unreadable:
    logging.warning("Skipping unreadable image %s: %s", name, reason)
  pairs = [(image, result) for image, result in zip(selected, results, strict=True)
           if isinstance(result, _Processed)]
  # Identical crops of different files (after re-encoding) are duplicates too.
  unique_pairs, seen_sha = [], set()
  for image, result in pairs:
    if result.sha256 not in seen_sha:
      seen_sha.add(result.sha256)
      unique_pairs.append((image, result))
  return unique_pairs, unreadable, len(pairs) - len(unique_pairs)


def _split_groups(pairs, group_of, val_fraction: float, test_fraction: float,
                  seed: int) -> dict[int, str]:
  """{near-duplicate group (its first member's index): split}. Whole groups are the split
  units, stratified by the model class of the group's first member."""
  units_by_class: dict[int, list[int]] = collections.defaultdict(list)
  for index, group in enumerate(group_of):
    if group == index:
      units_by_class[pairs[index][0].class_id].append(index)
  assignment = stratified_split(units_by_class, val_fraction=val_fraction,
                                test_fraction=test_fraction, seed=seed)
  return {u: s for s, units in assignment.items() for u in units}


def _write_images(pairs, group_of, split_of_unit, input_dir: str,
                  output_dir: str) -> list[dict]:
  """Writes every image to <split>/<make>/; returns their manifest rows in manifest order."""
  members = collections.Counter(group_of)
  rows = []
  for index, (image, result) in enumerate(pairs):
    split = split_of_unit[group_of[index]]
    make = make_folder_name(make_of(image.model))
    relpath = f"{split}/{make}/{image.output_stem}.jpg"
    path = os.path.join(output_dir, relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(result.jpeg)
    group = group_of[index]
    rows.append({
        "split": split, "make": make, "relpath": relpath,
        "sha256": result.sha256, "width": result.width,
        "height": result.height, "stanford_class_id": image.class_id,
        "model": image.model,
        "near_dup_group": (f"{pairs[group][0].output_stem}.jpg"
                           if members[group] > 1 else ""),
        "source": os.path.relpath(image.name, input_dir),
    })
  split_rank = {TRAIN: 0, VAL: 1, TEST: 2}
  rows.sort(key=lambda r: (split_rank[r["split"]], r["relpath"]))
  return rows


def _write_manifest(rows: list[dict], output_dir: str) -> None:
  """MANIFEST.csv, written whole and then renamed into place."""
  manifest_path = os.path.join(output_dir, "MANIFEST.csv")
  with open(manifest_path + ".tmp", "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(manifest_path + ".tmp", manifest_path)

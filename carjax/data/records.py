"""A labelled image as every data source lists it, not yet decoded."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Record:
  """One labelled image, not yet decoded.

  Attributes:
    name: the file path, or a TFDS id like "tfds:cars196/train/00001"; used in
      error messages and reports.
    label: the class index into the source's ``class_names``.
    path: the image file, for sources on disk.
    data: the encoded image bytes, for sources that are not files (TFDS).
  """

  name: str
  label: int
  path: str | None = None
  data: bytes | None = None

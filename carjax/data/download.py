"""Downloading Stanford Cars from a public mirror through the mirror's own client library.

Stanford's own URLs are dead. Mirrors that work today, by `--download` name:

* ``kaggle`` (default): the Kaggle data set jutrera/stanford-car-dataset-by-classes-folder,
  fetched with `kagglehub` (public: no Kaggle account needed). It keeps Stanford's file
  names, class ids and bounding boxes (``anno_train.csv``), so it rebuilds cars20
  (same images, same crops). It holds the whole of Stanford Cars; kagglehub caches it under
  ~/.cache/kagglehub.
* ``huggingface:OWNER/NAME``: any Hugging Face dataset repository of parquet files (e.g.
  ``huggingface:tanganke/stanford_cars``), fetched with `huggingface_hub`. Such mirrors have no
  bounding boxes; cars20's images are found by id only where the mirror stored Stanford's file
  names in its image paths.

Both need the ``prepare`` extra.
"""

from __future__ import annotations

import os

from carjax import extras

KAGGLE_HANDLE = "jutrera/stanford-car-dataset-by-classes-folder"
MIRRORS = ("kaggle", "huggingface:OWNER/NAME")


def download(mirror: str, local_dir: str | None = None) -> str:
  """Fetches `mirror` (see the module docstring); returns the local folder holding it.

  Both clients cache and resume: running it again does not download again.
  """
  if mirror == "kaggle":
    kagglehub = extras.import_optional("kagglehub", "prepare",
                                       "Downloading Stanford Cars from Kaggle")
    kwargs = {"output_dir": local_dir} if local_dir else {}
    return os.fspath(kagglehub.dataset_download(KAGGLE_HANDLE, **kwargs))
  if mirror.startswith("huggingface:") and "/" in mirror:
    hub = extras.import_optional("huggingface_hub", "prepare",
                                 "Downloading Stanford Cars from Hugging Face")
    repo_id = mirror.split(":", 1)[1]
    return os.fspath(hub.snapshot_download(
        repo_id=repo_id, repo_type="dataset", local_dir=local_dir,
        allow_patterns=["*.parquet", "*.json", "README.md"]))
  raise ValueError(f"--download={mirror!r}: expected one of {', '.join(MIRRORS)}")

"""Shared fixtures: a tiny synthetic image folder written by the tests, and the real data."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
_COMPILATION_CACHE: list[str] = []


def pytest_configure(config):
  """Many tests build the same tiny models in fresh `jax.jit` wrappers (a run, its resume,
  its evaluation), and each wrapper would compile the same program again. A persistent
  compilation cache, in a folder of this session's own, compiles each program once; the
  launchers the tests start share it. `CARJAX_COMPILATION_CACHE=0` switches it off."""
  del config
  from carjax import host_runtime
  folder = tempfile.mkdtemp(prefix="carjax-tests-xla-")
  if host_runtime.enable_compilation_cache(folder) is None:
    os.rmdir(folder)
  else:
    _COMPILATION_CACHE.append(folder)
    os.environ["CARJAX_COMPILATION_CACHE"] = folder


def pytest_unconfigure(config):
  del config
  for folder in _COMPILATION_CACHE:
    shutil.rmtree(folder, ignore_errors=True)


def shared_data_dir() -> pathlib.Path:
  """`$CARJAX_SHARED_DATA`, else ../shared/data beside the repository."""
  return pathlib.Path(os.environ.get("CARJAX_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def require_shared(*parts: str) -> pathlib.Path:
  """The path under the shared data folder, or skip the test saying what is missing."""
  path = shared_data_dir().joinpath(*parts)
  if not path.exists():
    pytest.skip(f"real data not found at {path} (set CARJAX_SHARED_DATA to the folder that "
                f"holds cars20/ and imagenet_photos/)")
  return path


def write_synthetic_folder(root: pathlib.Path, classes=("Audi", "BMW", "Ford"),
                           per_split=(("train", 8), ("val", 4)), size=(40, 24),
                           seed=0) -> pathlib.Path:
  """Writes <root>/<split>/<class>/*.jpg where each class has its own colour pattern.

  The classes are easy to tell apart (dominant colour channel + stripes), so a tiny model
  can learn them in a few steps, yet every image differs (noise, stripe offset).
  """
  rng = np.random.default_rng(seed)
  for split, count in per_split:
    for c, name in enumerate(classes):
      folder = root / split / name
      folder.mkdir(parents=True, exist_ok=True)
      for i in range(count):
        w, h = size
        image = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
        image[..., c % 3] += 150
        image[:, (i + c) % 4::4 + c, :] = 255 if c >= 3 else image[:, (i + c) % 4::4 + c, :]
        Image.fromarray(image).save(folder / f"{name.lower()}_{split}_{i:03d}.jpg", quality=95)
  return root


@pytest.fixture
def tiny_folder(tmp_path) -> pathlib.Path:
  return write_synthetic_folder(tmp_path / "cars")

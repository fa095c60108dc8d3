"""Tests for carjax.data.cache: threaded decoding, failures, the disk cache."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import pathlib

import numpy as np
from PIL import Image
import pytest

from carjax.data import cache, decode
from carjax.data.records import Record
from carjax.data.sources import ImageFolderSource


def _write_jpeg(path: pathlib.Path, color) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.new("RGB", (12, 8), color).save(path, "JPEG", quality=95)


@pytest.fixture
def image_tree(tmp_path) -> pathlib.Path:
  """train/{a,b} with 3 good images each plus three broken ones."""
  root = tmp_path / "images"
  for label, name in enumerate(("a", "b")):
    for i in range(3):
      _write_jpeg(root / "train" / name / f"{i}.jpg", (100 * label, 20 * i, 50))
  good = (root / "train/a/0.jpg").read_bytes()
  (root / "train/a/truncated.jpg").write_bytes(good[:len(good) // 3])
  (root / "train/b/empty.jpg").write_bytes(b"")
  (root / "train/b/text.jpg").write_text("hello")
  return root


def test_decodes_good_images_and_reports_bad_ones(image_tree, caplog):
  source = ImageFolderSource(image_tree)
  with caplog.at_level(logging.WARNING):
    split = cache.load_split(source, "train", image_size=16, cache_dir=None,
                             num_workers=2, progress=False)
  assert split.images.shape == (6, 16, 16, 3)
  assert split.images.dtype == np.uint8
  assert split.labels.dtype == np.int32
  assert split.labels.tolist() == [0, 0, 0, 1, 1, 1]
  assert [os.path.basename(n) for n in split.names] == ["0.jpg", "1.jpg",
                                                        "2.jpg"] * 2
  assert split.class_names == ("a", "b")
  failed = {os.path.basename(name): reason for name, reason in split.failures}
  assert set(failed) == {"truncated.jpg", "empty.jpg", "text.jpg"}
  assert "empty" in failed["empty.jpg"]
  assert "truncated" in failed["truncated.jpg"]
  # Every skipped file is named in the log, never dropped silently.
  for name, _ in split.failures:
    assert name in caplog.text
  # Pixels of the images that decoded are where their names say.
  np.testing.assert_allclose(split.images[4].mean(axis=(0, 1)), (100, 20, 50),
                             atol=3)


def test_thread_pool_and_inline_decoding_agree(image_tree):
  source = ImageFolderSource(image_tree)
  threaded = cache.load_split(source, "train", image_size=10, cache_dir=None,
                              num_workers=4, progress=False)
  inline = cache.load_split(source, "train", image_size=10, cache_dir=None,
                            num_workers=0, progress=True)
  np.testing.assert_array_equal(threaded.images, inline.images)
  assert threaded.names == inline.names
  assert threaded.failures == inline.failures


def test_cache_is_reused_without_decoding(image_tree, tmp_path, monkeypatch):
  source = ImageFolderSource(image_tree)
  cache_dir = tmp_path / "cache"
  cold = cache.load_split(source, "train", image_size=16, cache_dir=cache_dir,
                          num_workers=2, progress=False)
  assert not cold.from_cache
  files = sorted(p.name for p in cache_dir.iterdir())
  assert len(files) == 2 and files[0].endswith(".json")
  assert not any(name.endswith(".tmp") for name in files)

  def fail(*args, **kwargs):
    raise AssertionError("decoded although the cache is valid")
  monkeypatch.setattr(decode, "load_rgb", fail)
  warm = cache.load_split(ImageFolderSource(image_tree), "train",
                          image_size=16, cache_dir=cache_dir, num_workers=2,
                          progress=False)
  assert warm.from_cache
  np.testing.assert_array_equal(warm.images, cold.images)
  np.testing.assert_array_equal(warm.labels, cold.labels)
  assert warm.names == cold.names and warm.failures == cold.failures
  assert warm.class_names == ("a", "b")

  mapped = cache.load_split(source, "train", image_size=16,
                            cache_dir=cache_dir, progress=False, mmap=True)
  assert isinstance(mapped.images, np.memmap)
  np.testing.assert_array_equal(mapped.images, cold.images)


def test_cache_is_invalidated_when_a_file_changes(image_tree, tmp_path):
  source = ImageFolderSource(image_tree)
  cache_dir = tmp_path / "cache"
  first = cache.load_split(source, "train", image_size=16, cache_dir=cache_dir,
                           progress=False)
  changed = image_tree / "train/b/0.jpg"
  _write_jpeg(changed, (255, 255, 255))
  stat = changed.stat()
  # Make sure the mtime differs even on coarse-grained file systems.
  os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
  second = cache.load_split(source, "train", image_size=16,
                            cache_dir=cache_dir, progress=False)
  assert not second.from_cache
  index = second.names.index(str(changed))
  assert second.images[index].min() > 240
  assert not np.array_equal(first.images, second.images)
  # The stale version was removed: one .npy and one .json remain.
  assert len(list(cache_dir.iterdir())) == 2


def test_sources_sharing_a_cache_dir_keep_their_own_caches(image_tree,
                                                           tmp_path):
  other_tree = tmp_path / "other"
  _write_jpeg(other_tree / "train" / "z" / "0.jpg", (0, 0, 0))
  cache_dir = tmp_path / "cache"
  for root in (image_tree, other_tree, image_tree, other_tree):
    cache.load_split(ImageFolderSource(root), "train", image_size=8,
                     cache_dir=cache_dir, progress=False)
  assert len(list(cache_dir.iterdir())) == 4
  for root in (image_tree, other_tree):
    assert cache.load_split(ImageFolderSource(root), "train", image_size=8,
                            cache_dir=cache_dir, progress=False).from_cache


def test_cache_key_depends_on_size_mode_and_files(image_tree, tmp_path):
  source = ImageFolderSource(image_tree)
  records = source.records("train")
  key = lambda recs, size=16, mode="squash": cache.cache_key(
      source, "train", recs, image_size=size, resize_mode=mode)
  assert key(records) == key(list(records))
  assert len({key(records), key(records, size=8), key(records, mode="crop"),
              key(records[1:])}) == 4
  relabelled = [dataclasses.replace(records[0], label=1)] + records[1:]
  assert key(relabelled) != key(records)


def test_damaged_cache_is_rebuilt(image_tree, tmp_path):
  source = ImageFolderSource(image_tree)
  cache_dir = tmp_path / "cache"
  cache.load_split(source, "train", image_size=16, cache_dir=cache_dir,
                   progress=False)
  (array_path,) = cache_dir.glob("*.npy")
  array_path.write_bytes(b"garbage")
  rebuilt = cache.load_split(source, "train", image_size=16,
                             cache_dir=cache_dir, progress=False)
  assert not rebuilt.from_cache and rebuilt.images.shape == (6, 16, 16, 3)
  again = cache.load_split(source, "train", image_size=16,
                           cache_dir=cache_dir, progress=False)
  assert again.from_cache


@dataclasses.dataclass
class _BytesSource:
  """A source of in-memory encoded images, like TfdsSource."""
  records_list: list
  class_names: tuple = ("x", "y")
  identity: str = "bytes-test"

  def records(self, split):
    del split
    return self.records_list


def _png(color) -> bytes:
  buffer = io.BytesIO()
  Image.new("RGB", (4, 4), color).save(buffer, "PNG")
  return buffer.getvalue()


def test_byte_records_are_decoded_and_keyed_by_content(tmp_path):
  records = [Record("m/0", 0, data=_png((1, 2, 3))),
             Record("m/1", 1, data=_png((9, 9, 9))),
             Record("m/2", 1, data=b"not an image")]
  source = _BytesSource(records)
  split = cache.load_split(source, "train", image_size=4, cache_dir=tmp_path,
                           progress=False)
  assert split.names == ["m/0", "m/1"]
  assert split.failures[0][0] == "m/2"
  np.testing.assert_array_equal(split.images[1, 0, 0], (9, 9, 9))

  source.records_list = [records[0], Record("m/1", 1, data=_png((7, 7, 7))),
                         records[2]]
  changed = cache.load_split(source, "train", image_size=4, cache_dir=tmp_path,
                             progress=False)
  assert not changed.from_cache
  np.testing.assert_array_equal(changed.images[1, 0, 0], (7, 7, 7))


def test_unknown_resize_mode(image_tree):
  with pytest.raises(ValueError, match="resize_mode"):
    cache.load_split(ImageFolderSource(image_tree), "train", image_size=8,
                     resize_mode="zoom", cache_dir=None, progress=False)

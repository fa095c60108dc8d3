"""Decode a split once (in threads), resize it, and cache the array on disk.

`load_split` turns a source's split into one uint8 array ``[N, S, S, 3]`` plus
labels. Decoding ~4k JPEGs takes seconds, and every epoch and every run would
otherwise repeat it; with `cache_dir` the array is saved as ``.npy`` next to a
small JSON file and reused while nothing it was made from changed.

With a cache, images are decoded straight into the ``.npy`` file on disk (a
writable memory map, space reserved up front), never into one array in RAM,
and `mmap=True` reads it back memory-mapped: a split larger than the host's
memory decodes and trains, each batch paging in only its own images.

Unreadable files never stop a run and are never dropped silently: each one is
logged (absl warning with its path and the reason) and listed in
`CachedSplit.failures`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import errno
import hashlib
import json
import os
import re
import tempfile
import time
from typing import Any, Callable, Sequence

from absl import logging
import numpy as np
import tqdm

from carjax.data import decode
from carjax.data.records import Record

# Bump whenever the decoded pixels or the cache files' layout change (decoder
# behaviour, resize filter, file format), so that old caches are not reused.
CACHE_FORMAT_VERSION = 1

# Records decoded per thread-pool task: large enough to amortise the task
# overhead, small enough for a smooth progress bar.
_CHUNK_SIZE = 16
# How many failures are spelled out in a summary log line.
_MAX_LISTED_FAILURES = 20


@dataclasses.dataclass
class CachedSplit:
  """A decoded split.

  Attributes:
    images: uint8 ``[N, S, S, 3]``, the readable images in record order.
    labels: int32 ``[N]``, class indices into `class_names`.
    names: the N images' record names (file paths or TFDS ids).
    failures: (name, reason) of every record that could not be decoded.
    class_names: the source's class names, index = label.
    from_cache: whether the images were loaded from the disk cache.
    seconds: wall time spent decoding (or loading the cache).
  """

  images: np.ndarray
  labels: np.ndarray
  names: list[str]
  failures: list[tuple[str, str]]
  class_names: tuple[str, ...]
  from_cache: bool = False
  seconds: float = 0.0

  def __len__(self) -> int:
    return len(self.names)

  @property
  def images_per_second(self) -> float:
    total = len(self.names) + len(self.failures)
    return total / self.seconds if self.seconds > 0 else float("inf")


def load_split(source: Any, split: str, *, image_size: int | tuple[int, int],
               resize_mode: decode.ResizeMode = "squash",
               cache_dir: str | os.PathLike | None = None,
               num_workers: int | None = None, progress: bool = True,
               mmap: bool = False) -> CachedSplit:
  """Decodes and resizes every image of a split, using a disk cache if given.

  Args:
    source: an `ImageFolderSource`, `TfdsSource` or anything with
      ``records(split)``, ``class_names`` and ``identity``.
    split: the split name, e.g. "train".
    image_size: the output size, S (a square) or (height, width).
    resize_mode: 'squash', 'crop' or 'pad' (see `decode.resize_to`).
    cache_dir: folder for cached arrays; None disables caching.
    num_workers: decoding threads; None = one per CPU core, 0 or 1 = decode in
      the calling thread.
    progress: show a tqdm progress bar.
    mmap: return the cached images memory-mapped read-only (no copy into
      RAM) when loaded from the cache.

  Returns:
    The decoded split. Unreadable images are skipped, logged and listed in
    ``failures``.
  """
  if resize_mode not in decode.RESIZE_MODES:
    raise ValueError(f"Unknown resize_mode {resize_mode!r}; expected one of "
                     f"{decode.RESIZE_MODES}.")
  records = source.records(split)
  class_names = tuple(source.class_names)
  # A square stays a plain number in keys and file names, so caches made before
  # non-square inputs existed stay valid.
  height, width = decode.image_hw(image_size)
  image_size = height if height == width else (height, width)

  paths = None
  if cache_dir is not None:
    key = cache_key(source, split, records, image_size=image_size,
                    resize_mode=resize_mode)
    prefix = _cache_prefix(source, split, image_size, resize_mode)
    paths = _cache_paths(os.fspath(cache_dir), prefix, key)
    cached = _read_cache(*paths, key=key, image_size=image_size, mmap=mmap)
    if cached is not None:
      cached.class_names = class_names
      _log_result(cached, split, source)
      return cached

  decode_args = dict(image_size=image_size, resize_mode=resize_mode,
                     num_workers=num_workers, progress=progress,
                     description=f"decode {split}")
  result = None
  if paths is not None:
    result = _decode_to_cache(records, *paths, key=key, source=source,
                              split=split, class_names=class_names, mmap=mmap,
                              **decode_args)
    if result is not None:
      _remove_stale_caches(os.fspath(cache_dir), prefix,
                           os.path.basename(paths[0])[:-len(".npy")])
  if result is None:
    result = _decode_records(records, **decode_args)
  result.class_names = class_names
  _log_result(result, split, source)
  return result


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


def _decode_one(record: Record, image_size: int | tuple[int, int],
                resize_mode: decode.ResizeMode) -> np.ndarray:
  source = record.path if record.path is not None else record.data
  if source is None:
    raise decode.UnreadableImageError(record.name,
                                      "record has neither a path nor data")
  image = decode.load_rgb(source, name=record.name)
  return decode.resize_to(image, image_size, resize_mode)


def _decode_records(records: Sequence[Record], *, image_size: int | tuple[int, int],
                    resize_mode: decode.ResizeMode, num_workers: int | None,
                    progress: bool, description: str) -> CachedSplit:
  """Decodes records into one array in memory."""
  start = time.perf_counter()
  images = np.empty((len(records),) + decode.image_hw(image_size) + (3,), np.uint8)
  reasons = _decode_into(images, records, image_size=image_size,
                         resize_mode=resize_mode, num_workers=num_workers,
                         progress=progress, description=description)
  ok, failures = _sort_out(records, reasons)
  if failures:
    images = images[ok]  # One compacting copy, only when something failed.
  return CachedSplit(
      images=images,
      labels=np.array([records[i].label for i in ok], np.int32),
      names=[records[i].name for i in ok],
      failures=failures,
      class_names=(),
      from_cache=False,
      seconds=time.perf_counter() - start)


def _sort_out(records: Sequence[Record], reasons: Sequence[str | None]):
  """(indices of the decoded records, [(name, reason)] of the others), logged."""
  ok = [i for i, reason in enumerate(reasons) if reason is None]
  failures = [(records[i].name, reason) for i, reason in enumerate(reasons)
              if reason is not None]
  for name, reason in failures:
    logging.warning("Skipping unreadable image %s: %s", name, reason)
  return ok, failures


def _decode_into(images: np.ndarray, records: Sequence[Record], *,
                 image_size: int | tuple[int, int], resize_mode: decode.ResizeMode,
                 num_workers: int | None, progress: bool,
                 description: str) -> list[str | None]:
  """Decodes record i into images[i], in a thread pool; returns each record's
  failure reason (None: decoded).

  PIL releases the GIL while decoding and resampling, so threads scale with
  cores without pickling images between processes.
  """
  reasons: list[str | None] = [None] * len(records)

  def decode_chunk(first: int) -> int:
    last = min(first + _CHUNK_SIZE, len(records))
    for i in range(first, last):
      try:
        images[i] = _decode_one(records[i], image_size, resize_mode)
      except decode.UnreadableImageError as e:
        reasons[i] = e.reason
      except Exception as e:  # pylint: disable=broad-except
        # One strange file must not cost a long decode run; the reason still
        # reaches the log and `failures`.
        reasons[i] = f"unexpected {type(e).__name__} while decoding: {e}"
    return last - first

  chunk_starts = range(0, len(records), _CHUNK_SIZE)
  if num_workers is None:
    num_workers = os.cpu_count() or 1
  with tqdm.tqdm(total=len(records), desc=description, unit="img",
                 disable=not progress, dynamic_ncols=True) as bar:
    if num_workers <= 1:
      for first in chunk_starts:
        bar.update(decode_chunk(first))
    else:
      with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
        for done in concurrent.futures.as_completed(
            [pool.submit(decode_chunk, first) for first in chunk_starts]):
          bar.update(done.result())
  return reasons


def _log_result(result: CachedSplit, split: str, source: Any) -> None:
  verb = "Loaded cached" if result.from_cache else "Decoded"
  logging.info("%s %d images of split %r from %s in %.2f s (%.0f images/s).",
               verb, len(result), split, getattr(source, "identity", source),
               result.seconds, result.images_per_second)
  if result.failures:
    listed = "; ".join(f"{n} ({r})"
                       for n, r in result.failures[:_MAX_LISTED_FAILURES])
    more = len(result.failures) - _MAX_LISTED_FAILURES
    logging.warning(
        "%d of %d images of split %r were unreadable and skipped: %s%s",
        len(result.failures), len(result) + len(result.failures), split,
        listed, f"; and {more} more" if more > 0 else "")
  if not len(result):
    logging.error("Split %r of %s has no readable images.", split,
                  getattr(source, "identity", source))


# ---------------------------------------------------------------------------
# Disk cache
# ---------------------------------------------------------------------------


def _record_fingerprint(record: Record) -> list[Any]:
  """What identifies a record's content cheaply: size and mtime, or a hash."""
  if record.path is not None:
    try:
      stat = os.stat(record.path)
      return [record.name, record.label, stat.st_size, stat.st_mtime_ns]
    except OSError:
      return [record.name, record.label, None, None]
  data = record.data or b""
  # In-memory bytes have no mtime; hashing them is cheap next to decoding.
  return [record.name, record.label, len(data),
          hashlib.blake2b(data, digest_size=16).hexdigest()]


def cache_key(source: Any, split: str, records: Sequence[Record], *,
              image_size: int | tuple[int, int], resize_mode: str) -> str:
  """A hex digest of everything the decoded array depends on.

  Covers the source's identity, the split, each record's name, label, size
  and modification time (or content hash), the output size and resize mode,
  the class names and `CACHE_FORMAT_VERSION`: changing, adding, removing or
  relabelling any file gives a new key.
  """
  payload = {
      "format_version": CACHE_FORMAT_VERSION,
      "source": getattr(source, "identity", repr(source)),
      "split": split,
      "image_size": image_size,
      "resize_mode": resize_mode,
      "class_names": list(source.class_names),
      "records": [_record_fingerprint(r) for r in records],
  }
  encoded = json.dumps(payload, separators=(",", ":")).encode()
  return hashlib.sha256(encoded).hexdigest()


def _cache_prefix(source: Any, split: str, image_size: int | tuple[int, int],
                  resize_mode: str) -> str:
  """File-name prefix shared by all cache versions of one (source, split, size, mode)."""
  identity = getattr(source, "identity", repr(source))
  source_tag = hashlib.sha256(identity.encode()).hexdigest()[:10]
  size_tag = "x".join(map(str, image_size)) if isinstance(image_size, tuple) else image_size
  return (f"{re.sub(r'[^A-Za-z0-9_.-]', '_', split)}-{size_tag}-"
          f"{resize_mode}-{source_tag}-")


def _cache_paths(cache_dir: str, prefix: str, key: str) -> tuple[str, str]:
  stem = prefix + key[:24]
  return (os.path.join(cache_dir, stem + ".npy"),
          os.path.join(cache_dir, stem + ".json"))


def _remove_stale_caches(cache_dir: str, prefix: str, keep_stem: str) -> None:
  """Deletes older versions of this cache (same prefix, other key).

  Each is as large as the decoded split (~0.5 GB for cars20 at 224 px); they
  can never be used again once the data changed. A process still reading one
  keeps its open file until it is done (POSIX unlink semantics).
  """
  pattern = re.compile(re.escape(prefix) + r"[0-9a-f]{24}\.(npy|json)$")
  for filename in os.listdir(cache_dir):
    if pattern.match(filename) and not filename.startswith(keep_stem + "."):
      try:
        os.unlink(os.path.join(cache_dir, filename))
        logging.info("Removed stale image cache %s", filename)
      except OSError:
        pass


def _read_cache(array_path: str, meta_path: str, *, key: str, image_size: int | tuple[int, int],
                mmap: bool) -> CachedSplit | None:
  """The cached split, or None if absent, stale or damaged (then rebuilt)."""
  if not (os.path.exists(array_path) and os.path.exists(meta_path)):
    return None
  start = time.perf_counter()
  try:
    with open(meta_path, encoding="utf-8") as f:
      meta = json.load(f)
    if meta.get("key") != key:
      return None
    images = np.load(array_path, mmap_mode="r" if mmap else None,
                     allow_pickle=False)
    expected_shape = (len(meta["names"]),) + decode.image_hw(image_size) + (3,)
    if images.shape != expected_shape or images.dtype != np.uint8:
      raise ValueError(f"array is {images.dtype} {images.shape}, expected "
                       f"uint8 {expected_shape}")
  except (OSError, ValueError, KeyError, TypeError) as e:
    logging.warning("Ignoring damaged cache %s: %s; decoding again.",
                    array_path, e)
    return None
  logging.info("Using cached images %s", array_path)
  return CachedSplit(
      images=images,
      labels=np.asarray(meta["labels"], np.int32),
      names=list(meta["names"]),
      failures=[(n, r) for n, r in meta["failures"]],
      class_names=(),
      from_cache=True,
      seconds=time.perf_counter() - start)


def _atomic_write(path: str, write: Callable[[Any], None]) -> None:
  """Writes a file through a temporary file and a rename.

  Readers (another run sharing the cache) see either no file or a complete
  one, never a half-written array after a crash or a full disk.
  """
  directory = os.path.dirname(path) or "."
  fd, temp_path = tempfile.mkstemp(
      dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temp_path, path)
  except BaseException:
    try:
      os.unlink(temp_path)
    except OSError:
      pass
    raise


def _new_npy_on_disk(path_prefix: str, shape: tuple[int, ...]):
  """(temporary path, writable memory map) of a new uint8 ``.npy`` file whose
  whole size is reserved on disk now, so that a full disk fails here with an
  OSError rather than later with a SIGBUS while writing through the map."""
  directory = os.path.dirname(path_prefix)
  fd, temp_path = tempfile.mkstemp(dir=directory, suffix=".tmp",
                                   prefix=os.path.basename(path_prefix) + ".")
  os.close(fd)
  try:
    array = np.lib.format.open_memmap(temp_path, mode="w+", dtype=np.uint8,
                                      shape=shape)
    fd = os.open(temp_path, os.O_RDWR)
    try:
      os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as e:
      if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # No reservation there.
        raise
    finally:
      os.close(fd)
  except BaseException:
    _unlink_quietly(temp_path)
    raise
  return temp_path, array


def _unlink_quietly(path: str) -> None:
  try:
    os.unlink(path)
  except OSError:
    pass


def _finish_npy(temp_path: str, array: np.memmap, final_path: str) -> None:
  array.flush()
  fd = os.open(temp_path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)
  os.replace(temp_path, final_path)


def _decode_to_cache(records: Sequence[Record], array_path: str, meta_path: str,
                     *, key: str, source: Any, split: str,
                     class_names: tuple[str, ...], mmap: bool, image_size: int | tuple[int, int],
                     resize_mode: decode.ResizeMode, num_workers: int | None,
                     progress: bool, description: str) -> CachedSplit | None:
  """Decodes the split straight into its cache file and returns it loaded
  (memory-mapped with `mmap`); None if the cache cannot be written (then the
  caller decodes in memory: a cache is an optimisation)."""
  start = time.perf_counter()
  temp_paths: list[str] = []
  try:
    os.makedirs(os.path.dirname(array_path), exist_ok=True)
    shape = (len(records),) + decode.image_hw(image_size) + (3,)
    temp_path, images = _new_npy_on_disk(array_path, shape)
    temp_paths.append(temp_path)
    reasons = _decode_into(images, records, image_size=image_size,
                           resize_mode=resize_mode, num_workers=num_workers,
                           progress=progress, description=description)
    ok, failures = _sort_out(records, reasons)
    if failures:
      # Copy the decoded images into a file of the right length, a chunk at a
      # time (never the whole split in memory).
      temp_path, compact = _new_npy_on_disk(array_path, (len(ok),) + shape[1:])
      temp_paths.append(temp_path)
      for first in range(0, len(ok), 256):
        chunk = ok[first:first + 256]
        compact[first:first + len(chunk)] = images[chunk]
      del images
      _unlink_quietly(temp_paths[0])
      images = compact
    _finish_npy(temp_path, images, array_path)
    del images
    # The array first, the metadata last: a meta file (with the key) only
    # exists once its array is complete.
    meta = _cache_meta(records, ok, failures, key=key, source=source,
                       split=split, image_size=image_size,
                       resize_mode=resize_mode, class_names=class_names)
    _atomic_write(meta_path, lambda f: f.write(
        json.dumps(meta, indent=1).encode("utf-8")))
  except OSError as e:
    # A full or read-only disk must not fail training, but it should be visible.
    logging.warning("Could not write the image cache %s (%s); decoding into "
                    "memory instead.", array_path, e)
    for path in temp_paths:
      _unlink_quietly(path)
    return None
  except BaseException:
    for path in temp_paths:
      _unlink_quietly(path)
    raise
  return CachedSplit(
      images=np.load(array_path, mmap_mode="r" if mmap else None,
                     allow_pickle=False),
      labels=np.asarray(meta["labels"], np.int32),
      names=list(meta["names"]),
      failures=failures,
      class_names=(),
      from_cache=False,
      seconds=time.perf_counter() - start)


def _cache_meta(records: Sequence[Record], ok: Sequence[int], failures, *,
                key: str, source: Any, split: str, image_size: int | tuple[int, int],
                resize_mode: str, class_names: tuple[str, ...]) -> dict:
  return {
      "format_version": CACHE_FORMAT_VERSION,
      "key": key,
      "source": getattr(source, "identity", repr(source)),
      "split": split,
      "image_size": image_size,
      "resize_mode": resize_mode,
      "class_names": list(class_names),
      "names": [records[i].name for i in ok],
      "labels": [int(records[i].label) for i in ok],
      "failures": [list(f) for f in failures],
      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
  }

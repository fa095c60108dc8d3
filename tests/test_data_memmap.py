"""A split larger than host memory: decoded straight to disk, trained from a memory map.

The cache is written through a memory-mapped `.npy` file and read back memory-mapped, so the
process's anonymous (non-file) memory never holds the split: measured here as the peak growth
of `RssAnon` while decoding a few hundred images and reading every training batch of an
epoch, against the same decode into memory (which does hold it, showing the measurement
can tell the two apart).
"""

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from tests.conftest import REPO_ROOT

_MEASURE = r"""
import json, sys, threading, time
import numpy as np
from carjax.data import cache, pipeline, sources

def rss_anon():
  with open("/proc/self/status") as f:
    return next(int(l.split()[1]) * 1024 for l in f if l.startswith("RssAnon:"))

root, cache_dir = sys.argv[1], sys.argv[2] or None
source = sources.ImageFolderSource(root)
cache.load_split(source, "val", image_size=160, cache_dir=None, num_workers=2,
                 progress=False)  # Warm up imports, thread pool and allocator.
base, peak, done = rss_anon(), [0], threading.Event()

def sample():
  while not done.is_set():
    peak[0] = max(peak[0], rss_anon())
    time.sleep(0.002)

sampler = threading.Thread(target=sample)
sampler.start()
split = cache.load_split(source, "train", image_size=160, cache_dir=cache_dir, num_workers=2,
                         progress=False, mmap=True)
batches = pipeline.train_batches(split.images, split.labels, 16, seed=0)
checksum = sum(int(next(batches)["image"][:, 0, 0, 0].sum()) for _ in range(len(split) // 16))
done.set()
sampler.join()
print(json.dumps({"growth": peak[0] - base, "bytes": int(split.images.nbytes),
                  "memmap": isinstance(split.images, np.memmap), "count": len(split),
                  "checksum": checksum}))
"""


def _measure(root, cache_dir) -> dict:
  proc = subprocess.run([sys.executable, "-c", _MEASURE, str(root), str(cache_dir or "")],
                        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_split_is_decoded_to_disk_and_trained_from_a_memory_map(tmp_path):
  rng = np.random.default_rng(0)
  for split, count in (("train", 320), ("val", 2)):
    for c in ("a", "b"):
      folder = tmp_path / "cars" / split / c
      folder.mkdir(parents=True)
      for i in range(count // 2):
        Image.fromarray(rng.integers(0, 255, (16, 24, 3), dtype=np.uint8)).save(
            folder / f"{i}.png")
  in_memory = _measure(tmp_path / "cars", None)
  mapped = _measure(tmp_path / "cars", tmp_path / "cache")
  assert mapped["count"] == in_memory["count"] == 320
  assert mapped["bytes"] == 320 * 160 * 160 * 3  # 24.6 MB of decoded pixels.
  assert mapped["checksum"] == in_memory["checksum"]  # The same batches either way.
  assert mapped["memmap"]
  assert in_memory["growth"] > 0.9 * in_memory["bytes"]
  assert mapped["growth"] < 0.25 * mapped["bytes"], mapped
  reloaded = _measure(tmp_path / "cars", tmp_path / "cache")  # From the cache: no decoding.
  assert reloaded["memmap"] and reloaded["growth"] < 0.25 * reloaded["bytes"]

r"""Copies a run's record, everything but its weights, into the repository.

  python tools/keep_run_record.py /work/runs15/lite0_192x352_e8_ema995_unfrozen_s0 docs/runs

Run folders do not outlive the machine they trained on; what a later session needs to compare
against a run is small: its config, its training and dev curves (metrics.jsonl) and its
evaluations (metrics.json, per_class.csv, predictions.csv, which `launch.compare` reads).
Checkpoints, TensorBoard events, images and the lock are left behind. Not part of carjax.
"""

from __future__ import annotations

import os
import shutil
import sys

LEFT_BEHIND_DIRS = {"checkpoints", "tensorboard", "damaged"}
LEFT_BEHIND_SUFFIXES = (".png", ".lock", ".tmp")


def kept_files(run_dir: str):
  """The record's files, as paths relative to `run_dir`."""
  for root, dirs, files in os.walk(run_dir):
    dirs[:] = sorted(d for d in dirs if d not in LEFT_BEHIND_DIRS)
    for name in sorted(files):
      if not name.endswith(LEFT_BEHIND_SUFFIXES):
        yield os.path.relpath(os.path.join(root, name), run_dir)


def main() -> None:
  if len(sys.argv) != 3:
    raise SystemExit(__doc__.strip().splitlines()[2].strip())
  run_dir, dest_root = sys.argv[1], sys.argv[2]
  if not os.path.isfile(os.path.join(run_dir, "config.json")):
    raise SystemExit(f"error: {run_dir} is not a run folder (no config.json)")
  dest = os.path.join(dest_root, os.path.basename(os.path.normpath(run_dir)))
  for relative in kept_files(run_dir):
    os.makedirs(os.path.dirname(os.path.join(dest, relative)), exist_ok=True)
    shutil.copy2(os.path.join(run_dir, relative), os.path.join(dest, relative))
    print(os.path.join(dest, relative))


if __name__ == "__main__":
  main()

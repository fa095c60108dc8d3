r"""Random-moment kill probe (issue 12): stop a tiny training run at random times with random
signals, rerun the same command each time, and compare the result with an uninterrupted run.

  python -m tests.reliability_probes --kills=8 --seed=0

Not collected by pytest (the deterministic, targeted kills are tests/test_reliability.py);
it prints one Markdown table row per attempt and a verdict, for RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import random
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from tests.conftest import REPO_ROOT, write_synthetic_folder
from tests.test_reliability import TRAIN_FLAGS, final_result


def _command(cars, workdir):
  return [sys.executable, "-m", "launch.train", *TRAIN_FLAGS,
          f"--config.data.source=folder:{cars}", f"--workdir={workdir}"]


def _equal(a, b) -> bool:
  import jax  # pylint: disable=g-import-not-at-top
  la, ta = jax.tree.flatten(a)
  lb, tb = jax.tree.flatten(b)
  return ta == tb and all(np.array_equal(x, y) for x, y in zip(la, lb))


def main() -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--kills", type=int, default=8)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  rng = random.Random(args.seed)
  root = pathlib.Path(tempfile.mkdtemp(prefix="carjax_probe_"))
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT),
             JAX_COMPILATION_CACHE_DIR=str(root / "xla_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  cars = write_synthetic_folder(root / "cars")
  start = time.monotonic()
  subprocess.run(_command(cars, root / "reference"), env=env, cwd=REPO_ROOT, check=True,
                 capture_output=True)
  duration = time.monotonic() - start
  start = time.monotonic()  # Second run: compiled programs now come from the cache.
  subprocess.run(_command(cars, root / "reference2"), env=env, cwd=REPO_ROOT, check=True,
                 capture_output=True)
  duration = time.monotonic() - start
  print(f"uninterrupted run: {duration:.1f} s (with a warm compilation cache)")
  print("| attempt | signal | after (s) | exit code |")
  print("|---|---|---|---|")
  workdir = root / "run"
  for attempt in range(1, args.kills + 1):
    sig = rng.choice([signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
    delay = rng.uniform(0.5, duration)
    proc = subprocess.Popen(_command(cars, workdir), env=env, cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    if proc.poll() is None:
      proc.send_signal(sig)
    _, stderr = proc.communicate()
    traceback = " (traceback!)" if "Traceback" in stderr else ""
    print(f"| {attempt} | {sig.name} | {delay:.1f} | {proc.returncode}{traceback} |")
  final = subprocess.run(_command(cars, workdir), env=env, cwd=REPO_ROOT, capture_output=True,
                         text=True)
  if final.returncode != 0:
    print(f"final rerun failed ({final.returncode}):\n{final.stderr[-3000:]}")
    return 1
  last, last_meta, best, best_meta = final_result(workdir)
  ref_last, _, ref_best, ref_best_meta = final_result(root / "reference")
  same = (_equal(last, ref_last) and _equal(best, ref_best) and
          best_meta["best_step"] == ref_best_meta["best_step"])
  print(f"final rerun: exit 0 at step {last_meta['step']}; last and best "
        f"{'bitwise equal to' if same else 'DIFFER from'} the uninterrupted run "
        f"(best step {best_meta['best_step']}, {best_meta['best_metric']} "
        f"{best_meta['best_value']})")
  return 0 if same else 1


if __name__ == "__main__":
  sys.exit(main())

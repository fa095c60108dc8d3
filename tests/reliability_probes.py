r"""Random-moment kill probe (issue 12): stop a tiny training run at random times with random
signals, rerun the same command each time, and compare the result with an uninterrupted run.

  python -m tests.reliability_probes --trials=4 --kills=3 --seed=0

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

from carjax import checkpoint as ckpt
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
  parser.add_argument("--trials", type=int, default=4, help="fresh workdirs")
  parser.add_argument("--kills", type=int, default=3, help="random stops per trial at most")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  rng = random.Random(args.seed)
  root = pathlib.Path(tempfile.mkdtemp(prefix="carjax_probe_"))
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT),
             JAX_COMPILATION_CACHE_DIR=str(root / "xla_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  cars = write_synthetic_folder(root / "cars")
  subprocess.run(_command(cars, root / "reference"), env=env, cwd=REPO_ROOT, check=True,
                 capture_output=True)
  start = time.monotonic()  # Second run: compiled programs now come from the cache.
  subprocess.run(_command(cars, root / "reference2"), env=env, cwd=REPO_ROOT, check=True,
                 capture_output=True)
  duration = time.monotonic() - start
  print(f"uninterrupted run: {duration:.1f} s (with a warm compilation cache)")
  print("| trial | attempt | signal | after (s) | exit code | `last` step after |")
  print("|---|---|---|---|---|---|")
  ref_last, _, ref_best, ref_best_meta = final_result(root / "reference")
  all_same = True
  for trial in range(1, args.trials + 1):
    workdir = root / f"run{trial}"
    for attempt in range(1, args.kills + 1):
      sig = rng.choice([signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
      delay = rng.uniform(0.5, 0.9 * duration)
      proc = subprocess.Popen(_command(cars, workdir), env=env, cwd=REPO_ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
      time.sleep(delay)
      sent = proc.poll() is None
      if sent:
        proc.send_signal(sig)
      _, stderr = proc.communicate()
      traceback = " (traceback!)" if "Traceback" in stderr else ""
      meta = ckpt.read_meta(str(workdir), ckpt.LAST) if (workdir / "checkpoints").exists() \
          else None
      print(f"| {trial} | {attempt} | {sig.name if sent else '(finished first)'} | "
            f"{delay:.1f} | {proc.returncode}{traceback} | {meta['step'] if meta else '-'} |",
            flush=True)
      if proc.returncode == 0:
        break
    final = subprocess.run(_command(cars, workdir), env=env, cwd=REPO_ROOT,
                           capture_output=True, text=True)
    if final.returncode != 0:
      print(f"trial {trial}: final rerun failed ({final.returncode}):\n{final.stderr[-3000:]}")
      return 1
    last, last_meta, best, best_meta = final_result(workdir)
    same = (_equal(last, ref_last) and _equal(best, ref_best) and
            best_meta["best_step"] == ref_best_meta["best_step"])
    all_same &= same
    print(f"| {trial} | final | — | — | 0 | {last_meta['step']}: last and best "
          f"{'bitwise equal to' if same else 'DIFFER from'} the uninterrupted run |",
          flush=True)
  return 0 if all_same else 1


if __name__ == "__main__":
  sys.exit(main())

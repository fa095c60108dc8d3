"""One measurement in a fresh process: `python -m benchmarks.worker TASK.json OUT.json`.

The runner starts one of these per (stack, model, round), so each stack's thread pool has
the CPU to itself and nothing (compiled programs, oneDNN primitive caches, allocator
state) carries over between rounds. Thread settings are applied before any framework is
imported: the process is pinned to `threads` CPUs (os.sched_setaffinity) when that is fewer
than it may use, and OMP/MKL threads are set in the environment by the runner.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def pin_cpus(threads: int) -> list[int] | None:
  """Restricts this process to its first `threads` allowed CPUs; returns the CPU set."""
  if not hasattr(os, "sched_getaffinity"):
    return None
  allowed = sorted(os.sched_getaffinity(0))
  if 0 < threads < len(allowed):
    os.sched_setaffinity(0, allowed[:threads])
  return sorted(os.sched_getaffinity(0))


def run(task: dict) -> dict:
  cpus = pin_cpus(task["threads"])
  stack = task["stack"]
  start = time.perf_counter()
  try:
    if stack == "carjax":
      from benchmarks import carjax_stack as module  # pylint: disable=g-import-not-at-top
    elif stack == "keras":
      from benchmarks import keras_stack as module  # pylint: disable=g-import-not-at-top
    elif stack == "torch":
      from benchmarks import torch_stack as module  # pylint: disable=g-import-not-at-top
    elif stack == "pipeline":
      from benchmarks import data as module  # pylint: disable=g-import-not-at-top
    else:
      raise ValueError(f"unknown stack {stack!r}")
    from benchmarks.timing import Unavailable  # pylint: disable=g-import-not-at-top
    try:
      result = module.measure(task)
      result["status"] = "ok"
    except Unavailable as e:
      result = {"status": "unavailable", "reason": str(e)}
  except Exception as e:  # pylint: disable=broad-except
    result = {"status": "error", "reason": f"{type(e).__name__}: {e}",
              "traceback": traceback.format_exc()}
  result["cpus"] = cpus
  result["wall_s"] = time.perf_counter() - start
  result["env"] = {k: os.environ.get(k) for k in (
      "XLA_FLAGS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
      "TF_NUM_INTEROP_THREADS", "KERAS_BACKEND", "TF_ENABLE_ONEDNN_OPTS")}
  return result


def main(argv: list[str]) -> int:
  if len(argv) != 3:
    print("usage: python -m benchmarks.worker TASK.json OUT.json", file=sys.stderr)
    return 2
  with open(argv[1]) as f:
    task = json.load(f)
  result = run(task)
  with open(argv[2], "w") as f:
    json.dump(result, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))

"""`python tests/train_worker.py --stop_after_steps=N <launch.train flags>`: launch.train,
stopped as Ctrl-C would stop it after N training batches (the run saves and exits 0 here).

Used by tests/test_distributed.py to write a checkpoint mid-run on one device count and
resume it on another.
"""

import sys

from absl import app

from carjax.data import pipeline
from launch import train


def _stop_after(count: int):
  real = pipeline.train_batches

  def batches(*args, **kwargs):
    for i, batch in enumerate(real(*args, **kwargs)):
      if i == count:
        raise KeyboardInterrupt
      yield batch

  pipeline.train_batches = batches


if __name__ == "__main__":
  flag = next(a for a in sys.argv if a.startswith("--stop_after_steps="))
  sys.argv.remove(flag)
  _stop_after(int(flag.split("=", 1)[1]))
  try:
    app.run(train.main)
  except KeyboardInterrupt:
    print("stopped as asked", flush=True)

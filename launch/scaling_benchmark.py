r"""Training images/s of a config's real train step on 1, 2, … devices.

  python -m launch.scaling_benchmark --config=configs/custom_cnn.py --devices=1,2

On a CPU, each device count runs in a fresh process with that many XLA CPU devices (sharing
the machine's cores); on a GPU/TPU host pass --devices=0 to use the real local devices.
Prints one JSON line per device count plus the environment (versions, CPU, date).
"""

import json
import os
import subprocess
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_DEVICES = flags.DEFINE_list("devices", ["1", "2"],
                             "Fake CPU device counts, one process each; 0: the real devices.")
_STEPS = flags.DEFINE_integer("steps", 5, "Steps per timed window (after the compile and 2 "
                              "warm-up steps).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed windows; median and best reported.")
_CHILD = flags.DEFINE_bool("child", False, "Internal: measure in this process.")
flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  if _CHILD.value:
    from benchmarks import scaling  # pylint: disable=g-import-not-at-top
    print(json.dumps(scaling.measure(_CONFIG.value, steps=_STEPS.value,
                                                repeats=_REPEATS.value)), flush=True)
    return
  from benchmarks import env  # pylint: disable=g-import-not-at-top
  print(json.dumps({"date": env.datetime.datetime.now().isoformat(timespec="seconds"),
                    "cpu": env.cpu_model(), "cores": len(os.sched_getaffinity(0)),
                    "load_average": os.getloadavg(),
                    "versions": {k: v for k, v in env.package_versions().items() if v}}))
  for count in _DEVICES.value:
    environ = dict(os.environ)
    if int(count) > 0:
      environ.update(JAX_PLATFORMS="cpu",
                     XLA_FLAGS=f"--xla_force_host_platform_device_count={int(count)}")
    args = [a for a in sys.argv[1:] if not a.startswith("--devices")]
    subprocess.run([sys.executable, "-m", "launch.scaling_benchmark", *args, "--child"],
                   env=environ, check=True)


if __name__ == "__main__":
  app.run(main)

r"""Trains a model, then evaluates its best checkpoint (into <workdir>/eval_best_<split>/).

  python -m launch.train --config=configs/custom_cnn.py \
      --config.data.source=folder:../shared/data/cars20 --workdir=runs/custom_cnn

Run the same command again after an interruption and it resumes from the last checkpoint.

Several processes (hosts, or one process per GPU) train one model together when each runs
this command with the same config and workdir plus its place in the run: on Cloud TPU VMs,
SLURM and Open MPI JAX finds it itself (`--distributed=true`; 'auto' already joins a SLURM or
Open MPI job of several tasks), elsewhere pass `--coordinator_address=HOST:PORT
--num_processes=N --process_id=I` (or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID). docs/accelerators.md has the commands.
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from carjax import cli
from carjax import distributed
from carjax import logging_setup
from carjax.convert import weights_cache
from carjax import evaluation
from carjax.train import loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", distributed.AUTO, [distributed.AUTO, distributed.ON, distributed.OFF],
    "Join a multi-process run: 'auto' when a coordinator is given or a SLURM/Open MPI job "
    "has several tasks; 'true' always (JAX detects TPU VMs, SLURM, Open MPI); 'false' never.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0's coordinator (multi-process runs).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Number of processes of a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "This process's index in a multi-process run (0 = primary).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging_setup.setup()
  try:
    distributed.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                           _PROCESS_ID.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  try:
    trained = loop.train(_CONFIG.value, _WORKDIR.value)
  except weights_cache.PretrainedWeightsError as e:  # Raised before any data is read.
    print(f"error: {e}", file=sys.stderr)
    return 2
  evaluation.evaluate_trained(trained)


if __name__ == "__main__":
  cli.run(main)

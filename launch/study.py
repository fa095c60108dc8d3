r"""The study in one command: trains (or reuses) every model, evaluates them alike, reports.

  python -m launch.study --config=configs/study.py \
      --config.data.source=folder:../shared/data/cars20 --workdir=runs/study

Each model trains in <workdir>/<model name>/ (rerun the command after an interruption: finished
runs are reused, an interrupted one resumes); the report is <workdir>/report/report.html (and
report.md beside its figures and CSV tables). --config.train_missing=False only reports the
runs that exist.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from carjax import cli
from carjax import logging_setup
from carjax.study import report
from carjax.study import runs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Study config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the study's runs and report.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging_setup.setup()
  result = report.run_study(_CONFIG.value, _WORKDIR.value)
  print(f"Report: {result.html_path}")
  for name, run in result.runs.items():
    print(f"  {name}: {run.status}{' (' + run.detail + ')' if run.detail else ''}")
  failed = [n for n, r in result.runs.items() if r.status == runs.FAILED]
  if failed or result.section_errors:
    logging.error("Failed models: %s; failed report sections: %s", failed,
                  result.section_errors)
    raise SystemExit(1)


if __name__ == "__main__":
  cli.run(main)

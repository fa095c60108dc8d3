r"""Compares a candidate recipe with a baseline on the same photos: each evaluation's accuracy
with its Wilson 95 % interval, McNemar's exact test of every candidate against every baseline,
and the seed-matched pairs pooled (matched by position when both lists are equally long).

  python -m launch.evaluate --workdir=runs/new_s0 --split=dev    # for every run compared
  python -m launch.compare --baseline=runs/old_s0/eval_best_dev,runs/old_s1/eval_best_dev \
      --candidate=runs/new_s0/eval_best_dev,runs/new_s1/eval_best_dev

Each name is an evaluation folder `launch.evaluate` wrote (predictions.csv); both sides must
have scored the same photos of the same split.
"""

from absl import app
from absl import flags

from carjax import cli
from carjax.study import comparison

_CANDIDATE = flags.DEFINE_list("candidate", None, "Evaluation folders of the recipe tried.")
_BASELINE = flags.DEFINE_list("baseline", None, "Evaluation folders of the recipe it is "
                              "measured against.")
flags.mark_flags_as_required(["candidate", "baseline"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _CANDIDATE.value or not _BASELINE.value:
    raise app.UsageError("--candidate and --baseline each name at least one evaluation folder.")
  candidates = [comparison.read_evaluation(f) for f in _CANDIDATE.value]
  baselines = [comparison.read_evaluation(f) for f in _BASELINE.value]
  print("\n".join(comparison.report(candidates, baselines)))


if __name__ == "__main__":
  cli.run(main)

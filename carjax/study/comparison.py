"""Two recipes compared on the same photos: each evaluation's accuracy with its Wilson
interval, and McNemar's exact test of their disagreements, seed by seed and pooled.

A lever is judged on the dev split by evaluations of the runs with and without it
(`launch.evaluate --split=dev`); `python -m launch.compare` prints what this module computes,
so each verdict in RESULTS.md is one command away from its numbers.

Pooling the seed-matched pairs (candidate seed i against baseline seed i) concatenates their
predictions: the same photos then count once per pair, so the pairs are not independent and
the pooled p-value is a guide, not a test (which the printed line says).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Sequence

import numpy as np

from carjax import errors
from carjax import metrics as metrics_lib
from carjax import workdir as workdir_lib


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """One evaluation folder: what it scored and, photo by photo, whether it was right."""

  folder: str
  split: str | None  # None: an evaluation folder without its metrics.json.
  correct_by_file: dict[str, bool]

  @property
  def accuracy(self) -> float:
    return float(np.mean(list(self.correct_by_file.values())))

  def interval(self) -> tuple[float, float]:
    return metrics_lib.wilson_interval(sum(self.correct_by_file.values()),
                                       len(self.correct_by_file))


@dataclasses.dataclass(frozen=True)
class Paired:
  """A candidate against a baseline on the same `count` predictions."""

  count: int
  candidate_right: int
  baseline_right: int
  only_candidate_right: int
  only_baseline_right: int
  p_value: float

  @property
  def points(self) -> float:
    """The candidate's lead in accuracy points (negative: behind)."""
    return 100.0 * (self.candidate_right - self.baseline_right) / self.count


def read_evaluation(folder: str) -> Evaluation:
  """The evaluation `launch.evaluate` wrote into `folder`; an error naming the folder (and,
  for a training workdir, its evaluation folders) when there is none."""
  predictions = os.path.join(folder, workdir_lib.EVAL_PREDICTIONS)
  if not os.path.isfile(predictions):
    inside = sorted(name for name in (os.listdir(folder) if os.path.isdir(folder) else ())
                    if os.path.isfile(os.path.join(folder, name,
                                                   workdir_lib.EVAL_PREDICTIONS)))
    hint = (f"; it holds the evaluations {', '.join(inside)}" if inside else
            "; `python -m launch.evaluate --workdir=RUN --split=dev` writes one")
    raise errors.MissingPathError(f"{folder} is no evaluation folder (no "
                                  f"{workdir_lib.EVAL_PREDICTIONS}){hint}")
  split = None
  if os.path.isfile(os.path.join(folder, workdir_lib.EVAL_METRICS)):
    split = workdir_lib.read_eval_metrics(folder).get("evaluated_on")
  with open(predictions, newline="") as f:
    # Real paths, so runs that named the same data folder differently still pair up.
    correct = {os.path.realpath(row["file"]): row["correct"] == "1"
               for row in csv.DictReader(f)}
  if not correct:
    raise errors.DataError(f"{predictions} holds no prediction")
  return Evaluation(folder, split, correct)


def _check_same_photos(a: Evaluation, b: Evaluation) -> None:
  if a.split and b.split and a.split != b.split:
    raise errors.DataError(f"{a.folder} scored split {a.split!r} but {b.folder} scored "
                           f"{b.split!r}: compare evaluations of the same split")
  if a.correct_by_file.keys() != b.correct_by_file.keys():
    only_a = len(a.correct_by_file.keys() - b.correct_by_file.keys())
    only_b = len(b.correct_by_file.keys() - a.correct_by_file.keys())
    raise errors.DataError(f"{a.folder} and {b.folder} did not score the same photos "
                           f"({only_a} only in the first, {only_b} only in the second): "
                           "a different data folder or dev split")


def _paired_vectors(candidate_right: np.ndarray, baseline_right: np.ndarray) -> Paired:
  return Paired(count=len(candidate_right), candidate_right=int(candidate_right.sum()),
                baseline_right=int(baseline_right.sum()),
                only_candidate_right=int((candidate_right & ~baseline_right).sum()),
                only_baseline_right=int((baseline_right & ~candidate_right).sum()),
                p_value=metrics_lib.mcnemar_p_value(candidate_right, baseline_right))


def _vectors(candidate: Evaluation, baseline: Evaluation) -> tuple[np.ndarray, np.ndarray]:
  _check_same_photos(candidate, baseline)
  files = sorted(candidate.correct_by_file)
  return (np.array([candidate.correct_by_file[f] for f in files]),
          np.array([baseline.correct_by_file[f] for f in files]))


def paired(candidate: Evaluation, baseline: Evaluation) -> Paired:
  """The candidate against the baseline, photo by photo (they must share split and photos)."""
  return _paired_vectors(*_vectors(candidate, baseline))


def pooled(pairs: Sequence[tuple[Evaluation, Evaluation]]) -> Paired:
  """(candidate, baseline) pairs, e.g. seed-matched, concatenated into one McNemar test."""
  if not pairs:
    raise ValueError("pooled() needs at least one (candidate, baseline) pair")
  vectors = [_vectors(c, b) for c, b in pairs]
  return _paired_vectors(np.concatenate([c for c, _ in vectors]),
                         np.concatenate([b for _, b in vectors]))


def _describe(result: Paired) -> str:
  return (f"{result.points:+.1f} points ({result.candidate_right} against "
          f"{result.baseline_right} right of {result.count}; only the candidate right on "
          f"{result.only_candidate_right}, only the baseline on "
          f"{result.only_baseline_right}), McNemar p = {result.p_value:.2g}")


def report(candidates: Sequence[Evaluation], baselines: Sequence[Evaluation]) -> list[str]:
  """The lines `launch.compare` prints: every evaluation's accuracy with its interval, every
  candidate against every baseline, and the seed-matched pairs pooled when both lists are
  equally long (matched by position)."""
  lines = []
  for role, group in (("baseline", baselines), ("candidate", candidates)):
    for e in group:
      low, high = e.interval()
      lines.append(f"{role:9s} {e.split or '?'} accuracy {e.accuracy:.3f} [{low:.3f}, {high:.3f}] "
                   f"(Wilson 95 %, {len(e.correct_by_file)} photos)  {e.folder}")
  for c in candidates:
    for b in baselines:
      lines.append(f"{c.folder} against {b.folder}: {_describe(paired(c, b))}")
  if len(candidates) == len(baselines) > 1:
    lines.append(f"pooled over the {len(candidates)} pairs matched by position (the same "
                 f"photos count once per pair: a guide, not a test): "
                 f"{_describe(pooled(list(zip(candidates, baselines))))}")
  return lines

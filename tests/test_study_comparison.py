"""carjax.study.comparison and launch.compare: paired accuracy on the same photos."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from carjax import errors
from carjax import metrics
from carjax.study import comparison
from tests.conftest import REPO_ROOT


def _write_eval(folder, right, split="dev", photos_dir="/data/cars20/train"):
  os.makedirs(folder)
  with open(os.path.join(folder, "predictions.csv"), "w") as f:
    f.write("file,true,predicted,confidence,correct\n")
    f.writelines(f"{photos_dir}/img{i}.jpg,A,A,0.9,{int(c)}\n" for i, c in enumerate(right))
  with open(os.path.join(folder, "metrics.json"), "w") as f:
    json.dump({"evaluated_on": split, "accuracy": float(np.mean(right))}, f)
  return str(folder)


def test_paired_counts_the_disagreements_and_pooling_concatenates_the_pairs(tmp_path):
  rng = np.random.default_rng(0)
  base = [rng.random(50) < 0.6, rng.random(50) < 0.6]
  cand = [b | (rng.random(50) < 0.3) for b in base]  # Right wherever the baseline is, and more.
  cands = [comparison.read_evaluation(_write_eval(tmp_path / f"c{i}", c))
           for i, c in enumerate(cand)]
  bases = [comparison.read_evaluation(_write_eval(tmp_path / f"b{i}", b))
           for i, b in enumerate(base)]
  one = comparison.paired(cands[0], bases[0])
  assert (one.count, one.candidate_right, one.baseline_right) == (50, cand[0].sum(),
                                                                  base[0].sum())
  assert one.only_baseline_right == 0
  assert one.only_candidate_right == cand[0].sum() - base[0].sum() > 0
  assert one.p_value == pytest.approx(metrics.mcnemar_p_value(cand[0], base[0]))
  assert one.points == pytest.approx(100 * (cand[0].mean() - base[0].mean()))
  both = comparison.pooled(list(zip(cands, bases)))
  assert both.count == 100
  assert both.p_value == pytest.approx(
      metrics.mcnemar_p_value(np.concatenate(cand), np.concatenate(base)))
  assert both.p_value < one.p_value  # Twice the disagreements, all one way.
  lines = comparison.report(cands, bases)
  assert lines[0].startswith("baseline  dev accuracy")
  assert sum(" against " in line for line in lines) == 5  # 2 × 2 pairs + the pooled line.
  assert lines[-1].startswith("pooled over the 2 pairs")
  assert "pooled" not in "".join(comparison.report(cands[:1], bases))


def test_photos_pair_up_through_links_but_other_photos_or_splits_are_refused(tmp_path):
  real = tmp_path / "cars20"
  real.mkdir()
  os.symlink(real, tmp_path / "link")
  a = comparison.read_evaluation(_write_eval(tmp_path / "a", [1, 0, 1],
                                             photos_dir=str(real)))
  b = comparison.read_evaluation(_write_eval(tmp_path / "b", [1, 1, 0],
                                             photos_dir=str(tmp_path / "link")))
  assert comparison.paired(a, b).count == 3  # The same photos, named through a link.
  other = comparison.read_evaluation(_write_eval(tmp_path / "other", [1, 0, 1, 1]))
  with pytest.raises(errors.DataError, match="did not score the same photos"):
    comparison.paired(a, other)
  val = comparison.read_evaluation(_write_eval(tmp_path / "val", [1, 0, 1], split="val",
                                               photos_dir=str(real)))
  with pytest.raises(errors.DataError, match="scored split 'val'"):
    comparison.paired(val, a)


def test_a_training_workdir_is_refused_with_its_evaluation_folders_named(tmp_path):
  _write_eval(tmp_path / "run" / "eval_best_dev", [1, 0])
  with pytest.raises(errors.MissingPathError, match="holds the evaluations eval_best_dev"):
    comparison.read_evaluation(str(tmp_path / "run"))


def test_launch_compare_prints_the_comparison_or_one_error_line(tmp_path):
  a = _write_eval(tmp_path / "a", [1] * 30 + [0] * 10)
  b = _write_eval(tmp_path / "b", [1] * 20 + [0] * 20)
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), JAX_PLATFORMS="cpu")

  def compare(*args):
    return subprocess.run([sys.executable, "-m", "launch.compare", *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=120)

  ok = compare(f"--candidate={a}", f"--baseline={b}")
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert "+25.0 points (30 against 20 right of 40" in ok.stdout
  bad = compare(f"--candidate={a}", f"--baseline={tmp_path}")
  assert bad.returncode == 2
  assert bad.stderr.strip().count("\n") == 0 and "no evaluation folder" in bad.stderr

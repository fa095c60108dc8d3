"""Tests for the repository's tools (tools/, not part of the package)."""

import os
import sys

import pytest

from carjax.study import comparison
from tools import keep_run_record
from tools import train_step_flops


def _write(path, text=""):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


def test_keep_run_record_keeps_what_compare_reads_and_leaves_the_weights(tmp_path, monkeypatch):
  run = tmp_path / "runs" / "lite0_s0"
  _write(str(run / "config.json"), "{}")
  _write(str(run / "metrics.jsonl"), '{"step": 1}\n')
  _write(str(run / ".carjax.lock"), "pid 1")
  _write(str(run / "checkpoints" / "best" / "7" / "state"), "weights")
  _write(str(run / "tensorboard" / "events.out"), "events")
  _write(str(run / "eval_best_dev" / "confusion_matrix.png"), "png")
  _write(str(run / "eval_best_dev" / "predictions.csv"),
         "file,true,predicted,confidence,correct\n/data/a.jpg,Audi,Audi,0.9,1\n"
         "/data/b.jpg,BMW,Audi,0.6,0\n")
  monkeypatch.setattr(sys, "argv", ["keep_run_record.py", str(run), str(tmp_path / "kept")])
  keep_run_record.main()

  kept = tmp_path / "kept" / "lite0_s0"
  assert sorted(keep_run_record.kept_files(str(kept))) == [
      "config.json", os.path.join("eval_best_dev", "predictions.csv"), "metrics.jsonl"]
  evaluation = comparison.read_evaluation(str(kept / "eval_best_dev"))
  assert evaluation.correct_by_file == {"/data/a.jpg": True, "/data/b.jpg": False}


def test_keep_run_record_refuses_a_folder_that_is_no_run(tmp_path, monkeypatch):
  monkeypatch.setattr(sys, "argv", ["keep_run_record.py", str(tmp_path), str(tmp_path / "kept")])
  with pytest.raises(SystemExit, match="is not a run folder"):
    keep_run_record.main()
  assert not (tmp_path / "kept").exists()


def test_train_step_flops_reads_literals_and_strings():
  assert train_step_flops.parse_assignments(
      "model.stage_widths=(40, 80);model.variant=lite1;train.num_epochs=3;") == {
          "model.stage_widths": (40, 80), "model.variant": "lite1", "train.num_epochs": 3}
  with pytest.raises(SystemExit, match="not KEY=VALUE"):
    train_step_flops.parse_assignments("model.variant")


def test_train_step_flops_counts_more_work_for_a_wider_cnn():
  config = train_step_flops.load_config(
      os.path.join(os.path.dirname(__file__), "..", "configs", "custom_cnn.py"))
  config.update_from_flattened_dict({"data.image_size": (32, 32), "model.stage_widths": (8, 16),
                                     "model.convs_per_stage": 1, "model.dense_widths": (16,),
                                     "train.batch_size": 4})
  narrow = train_step_flops.step_flops(config)
  config.model.stage_widths = (16, 32)
  wider = train_step_flops.step_flops(config)
  # Doubling every conv's width quadruples the convolutions' work; at this tiny size the
  # augmentation and the optimiser's work, which grow less, dilute that.
  assert 2.0 < wider / narrow < 4.0

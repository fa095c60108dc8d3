"""carjax/train/loop.py: an interrupted run resumes to the same result as one run straight."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import pytest

from carjax import checkpoint as ckpt
from carjax.data import pipeline
from carjax.train import loop
from tests import helpers


def _final_params(workdir):
  from carjax.inference import restore_variables
  *_, variables, meta = restore_variables(str(workdir), ckpt.LAST)
  return variables, meta


def _train_straight_and_interrupted(config, tmp_path, monkeypatch, stop_at: int,
                                    check_batch=lambda batch: None):
  """Trains `config` straight into tmp/straight, and into tmp/stopped with a Ctrl-C before
  batch `stop_at` and then resumed; checks both end at the same step with the same
  parameters and returns that step."""
  loop.train(config, str(tmp_path / "straight"))
  real_batches = pipeline.train_batches

  def interrupted(*args, **kwargs):
    for i, batch in enumerate(real_batches(*args, **kwargs)):
      check_batch(batch)
      if i == stop_at:
        raise KeyboardInterrupt
      yield batch

  monkeypatch.setattr(pipeline, "train_batches", interrupted)
  with pytest.raises(KeyboardInterrupt):
    loop.train(config, str(tmp_path / "stopped"))
  _, meta = _final_params(tmp_path / "stopped")
  assert meta["step"] == stop_at
  monkeypatch.setattr(pipeline, "train_batches", real_batches)
  loop.train(config, str(tmp_path / "stopped"))

  straight, meta_a = _final_params(tmp_path / "straight")
  resumed, meta_b = _final_params(tmp_path / "stopped")
  assert meta_a["step"] == meta_b["step"]
  diffs = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), straight, resumed)
  assert max(jax.tree.leaves(diffs)) < 1e-5
  return meta_a["step"]


def test_interrupted_run_resumes_to_the_same_result(tiny_folder, tmp_path, monkeypatch):
  config = helpers.tiny_cnn_config(tiny_folder)
  # Mid-epoch 2 (6 steps per epoch).
  assert _train_straight_and_interrupted(config, tmp_path, monkeypatch, stop_at=7) == 12


def _write_model_csv(path, source, model_of) -> str:
  """A labels CSV naming each training image by its path relative to the folder's root."""
  lines = ["relpath,make,model"]
  for record in source.records("train"):
    rel = os.path.relpath(record.name, source.root).replace(os.sep, "/")
    lines.append(f"{rel},{rel.split('/')[1]},{model_of(rel)}")
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def test_a_run_with_an_aux_head_resumes_exactly_and_predicts_makes_only(tmp_path,
                                                                        monkeypatch):
  from carjax import evaluation, workdir as workdir_lib
  from carjax.data import sources
  from carjax.errors import WorkdirMismatchError
  from carjax.inference import Predictor
  from tests.conftest import write_synthetic_folder
  folder = write_synthetic_folder(tmp_path / "cars", per_split=(("train", 2), ("val", 2)))
  source = sources.ImageFolderSource(folder)
  model_of = lambda rel: f"{rel.split('/')[1]} {rel[-5]}"  # Make + image number: 6 models.
  config = helpers.tiny_cnn_config(folder)
  config.data.aux_labels_csv = _write_model_csv(tmp_path / "manifest.csv", source, model_of)
  config.train.num_epochs = 2  # 6 training images, batches of 4: one step an epoch.

  def has_aux_labels(batch):
    assert batch["aux_label"].shape == batch["label"].shape == (4,)

  assert _train_straight_and_interrupted(config, tmp_path, monkeypatch, stop_at=1,
                                         check_batch=has_aux_labels) == 2

  workdir = str(tmp_path / "stopped")
  assert workdir_lib.read_aux_class_names(workdir) == tuple(sorted(
      f"{make} {i}" for make in ("Audi", "BMW", "Ford") for i in "01"))
  stored = ckpt.saved_state_metadata(os.path.join(ckpt.checkpoint_dir(workdir, ckpt.LAST), "2"))
  assert stored["params"]["aux_head"]["kernel"].shape == (16, 6)
  train_lines = [m for m in workdir_lib.read_metric_lines(workdir) if m["split"] == "train"]
  assert train_lines and all(0.0 <= m["aux_accuracy"] <= 1.0 for m in train_lines)

  # Inference and evaluation know nothing of the aux head: makes only.
  predictor = Predictor(workdir, ckpt.LAST)
  assert "aux_head" not in predictor.variables["params"]
  images = helpers.smooth_images((32, 32), 5, seed=1)
  assert predictor.logits(images).shape == (5, 3)
  summary = evaluation.evaluate_workdir(workdir, which=ckpt.LAST)
  assert summary["count"] == 6

  # Other auxiliary classes are another run.
  config.data.aux_labels_csv = _write_model_csv(tmp_path / "other.csv", source,
                                                lambda rel: rel.split("/")[1] + " X")
  with pytest.raises(WorkdirMismatchError, match="auxiliary classes: 6 -> 3"):
    loop.train(config, workdir)

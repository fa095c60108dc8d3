"""carjax.evaluation: the raw weights of a run that keeps a weight average, and ensembles of
runs (the mean of their probabilities), on tiny CNNs trained here."""

from __future__ import annotations

import csv
import json
import shutil

import jax
import numpy as np
import pytest

from carjax import evaluation
from carjax import inference
from carjax.errors import ConfigError, DataError
from configs import custom_cnn
from tests import helpers
from tests.conftest import write_synthetic_folder


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
  """(data folder, a run keeping a weight average, a run of another seed without one)."""
  root = tmp_path_factory.mktemp("evaluation")
  data = write_synthetic_folder(root / "cars", per_split=(("train", 12), ("val", 4)),
                                size=(48, 36))
  workdirs = []
  for seed, ema_decay in ((0, 0.9), (1, 0.0)):
    config = custom_cnn.get_config("tiny")
    config.data.source = f"folder:{data}"
    config.train.num_epochs = 3
    config.train.ema_decay = ema_decay
    config.seed = seed
    workdir = root / f"run_{seed}"
    helpers.train_and_evaluate(config, str(workdir))
    workdirs.append(workdir)
  return data, *workdirs


def _predictions(folder):
  with open(folder / "predictions.csv", newline="") as f:
    return {r["file"]: (r["predicted"], float(r["confidence"])) for r in csv.DictReader(f)}


def _val_probabilities(workdir, use_ema=None):
  predictor = inference.Predictor(str(workdir), use_ema=use_ema)
  images, labels, names, _, _ = evaluation._load_target(predictor, "val", None)
  probabilities = jax.nn.softmax(predictor.logits(images), axis=-1)
  return np.asarray(probabilities, np.float64), np.asarray(labels), list(names), predictor


def test_noema_evaluates_the_raw_weights_beside_the_average(two_runs):
  _, averaged, _ = two_runs
  default = evaluation.evaluate_workdir(str(averaged), split="val")
  raw = evaluation.evaluate_workdir(str(averaged), split="val", use_ema=False)
  assert (default["weights"], raw["weights"]) == ("ema", "raw")
  assert (averaged / "eval_best_val_raw" / "metrics.json").is_file()
  with open(averaged / "eval_best_val" / "metrics.json") as f:
    assert json.load(f)["weights"] == "ema"  # The run's own evaluation is not overwritten.
  ema_view = _predictions(averaged / "eval_best_val")
  raw_view = _predictions(averaged / "eval_best_val_raw")
  assert ema_view.keys() == raw_view.keys() and len(ema_view) == default["count"]
  # Two different sets of weights: the confidences differ.
  assert max(abs(ema_view[k][1] - raw_view[k][1]) for k in ema_view) > 1e-4


def test_asking_for_the_average_of_a_run_without_one_is_refused(two_runs):
  _, _, plain = two_runs
  with pytest.raises(ConfigError, match="ema_decay is 0"):
    inference.Predictor(str(plain), use_ema=True)


def test_ensemble_scores_the_mean_of_its_members_probabilities(two_runs, tmp_path):
  _, averaged, plain = two_runs
  first, labels, names, predictor = _val_probabilities(averaged)
  second, _, _, _ = _val_probabilities(plain)
  mean = (first + second) / 2
  # The members disagree somewhere, else the test could not tell a mean from one member.
  assert np.abs(first - second).max() > 1e-3
  out = tmp_path / "ensemble"
  summary = evaluation.evaluate_ensemble([str(averaged), str(plain)], str(out), split="val")
  assert summary["count"] == len(labels) == 12
  assert summary["accuracy"] == pytest.approx(np.mean(mean.argmax(1) == labels))
  assert [m["workdir"] for m in summary["ensemble"]] == [str(averaged), str(plain)]
  assert [m["weights"] for m in summary["ensemble"]] == ["ema", "raw"]
  written = _predictions(out)
  for name, row in zip(names, mean):
    assert written[name] == (predictor.class_names[row.argmax()], pytest.approx(row.max(), abs=1e-4))


def _copy_run(workdir, to, **data_settings):
  """A copy of a trained run whose config.json's data section is changed as given."""
  shutil.copytree(workdir, to)
  config = json.loads((to / "config.json").read_text())
  config["data"].update(data_settings)
  (to / "config.json").write_text(json.dumps(config))
  return str(to)


def test_ensemble_refuses_members_that_see_other_photos_or_other_makes(two_runs, tmp_path):
  data, averaged, plain = two_runs
  # Dev splits carved with other seeds: other photos.
  dev_0 = _copy_run(averaged, tmp_path / "dev_0", dev_fraction=0.25, split_seed=0)
  dev_1 = _copy_run(plain, tmp_path / "dev_1", dev_fraction=0.25, split_seed=1)
  with pytest.raises(DataError, match=r"different photos \(9 and 9; '.*\.jpg' only in the first"):
    evaluation.evaluate_ensemble([dev_0, dev_1], str(tmp_path / "a"), split="dev")
  # The same photos through another spelling of their folder are the same photos.
  alias = tmp_path / "alias"
  alias.symlink_to(data, target_is_directory=True)
  aliased = _copy_run(plain, tmp_path / "aliased", source=f"folder:{alias}")
  summary = evaluation.evaluate_ensemble([str(averaged), aliased], str(tmp_path / "b"),
                                         split="val")
  assert summary["count"] == 12

  other_makes = tmp_path / "other_makes"
  shutil.copytree(plain, other_makes)
  (other_makes / "class_names.json").write_text(json.dumps(["BMW", "Audi", "Ford"]))
  with pytest.raises(DataError, match="same makes in the same order"):
    evaluation.evaluate_ensemble([str(averaged), str(other_makes)], str(tmp_path / "c"),
                                 split="val")
  with pytest.raises(ConfigError, match="two workdirs or more"):
    evaluation.evaluate_ensemble([str(averaged)], str(tmp_path / "d"))


def test_a_run_tested_at_another_size_chooses_scores_and_predicts_at_it(two_runs, tmp_path):
  data = two_runs[0]
  config = custom_cnn.get_config("tiny")
  config.data.source = f"folder:{data}"
  config.data.dev_fraction = 0.25
  config.train.num_epochs = 2
  config.eval.image_size = (40, 24)  # Trained at 32×32.
  workdir = tmp_path / "run"
  summary = helpers.train_and_evaluate(config, str(workdir))
  assert summary["image_size"] == [40, 24] and summary["evaluated_on"] == "val"
  with open(workdir / "metrics.jsonl") as f:
    assert sum(json.loads(line)["split"] == "dev" for line in f) == 2  # Chose at 40×24.
  predictor = inference.Predictor(str(workdir))
  assert (predictor.image_size, predictor.configured_image_size) == ((40, 24), (40, 24))
  assert predictor.load_image(str(next((data / "val").rglob("*.jpg")))).shape == (40, 24, 3)
  # The same checkpoint at the training size is another evaluation, in a folder of its own.
  at_training_size = evaluation.evaluate_workdir(str(workdir), split="val", image_size=32)
  assert at_training_size["image_size"] == [32, 32]
  assert (workdir / "eval_best_val_32x32" / "metrics.json").is_file()
  with open(workdir / "eval_best_val" / "metrics.json") as f:
    assert json.load(f)["image_size"] == [40, 24]
  from carjax.study import recipes  # pylint: disable=g-import-not-at-top
  assert recipes.recipe_row("cnn", config)[7] == "single view at 40×24"

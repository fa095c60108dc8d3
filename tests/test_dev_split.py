"""carjax.data.dev_split: the development split carved from train, and the run that uses it."""

from __future__ import annotations

import json

import pytest

from carjax.data import dev_split
from carjax.data.sources import ImageFolderSource
from carjax.errors import ConfigError
from carjax.data import loading
from conftest import require_shared, write_synthetic_folder


def _carve(root, fraction=0.25, seed=0):
  return dev_split.DevCarvedSource(ImageFolderSource(root), dev_fraction=fraction, seed=seed,
                                   train_split="train")


def test_dev_is_a_stratified_disjoint_share_of_train(tmp_path):
  root = write_synthetic_folder(tmp_path / "cars", per_split=(("train", 8), ("val", 4)))
  source = _carve(root)
  train, dev = source.records("train"), source.records("dev")
  original = ImageFolderSource(root).records("train")
  assert {r.name for r in train} | {r.name for r in dev} == {r.name for r in original}
  assert not {r.name for r in train} & {r.name for r in dev}
  # 25 % of each class's 8 images: 2 per class, for each of the 3 classes.
  assert sorted(r.label for r in dev) == [0, 0, 1, 1, 2, 2]
  # The test split is untouched.
  assert [r.name for r in source.records("val")] == [
      r.name for r in ImageFolderSource(root).records("val")]
  assert source.splits == ("train", "val", "dev")


def test_carve_depends_on_seed_only(tmp_path):
  root = write_synthetic_folder(tmp_path / "cars", per_split=(("train", 8), ("val", 4)))
  names = lambda s: [r.name for r in s.records("dev")]
  assert names(_carve(root, seed=3)) == names(_carve(root, seed=3))
  assert names(_carve(root, seed=3)) != names(_carve(root, seed=4))
  # The cache never confuses the full train split with its carved remainder.
  assert _carve(root).identity != ImageFolderSource(root).identity


def test_bad_fraction_and_existing_dev_split_are_refused(tmp_path):
  root = write_synthetic_folder(tmp_path / "cars", per_split=(("train", 4), ("dev", 2)))
  with pytest.raises(ConfigError, match="dev_fraction"):
    _carve(root, fraction=1.0)
  with pytest.raises(ConfigError, match="already has a split named 'dev'"):
    _carve(root)


def test_configured_source_selects_on_dev_only_when_asked(tmp_path):
  from configs import custom_cnn
  config = custom_cnn.get_config("tiny")
  config.data.source = f"folder:{write_synthetic_folder(tmp_path / 'cars')}"
  assert loading.selection_split(config.data) == "val"
  assert isinstance(loading.open_configured_source(config.data), ImageFolderSource)
  config.data.dev_fraction = 0.25
  assert loading.selection_split(config.data) == "dev"
  assert isinstance(loading.open_configured_source(config.data), dev_split.DevCarvedSource)


def test_cars20_dev_split_is_stratified_over_all_makes():
  root = require_shared("cars20")
  source = _carve(root, fraction=0.1)
  dev = source.records("dev")
  assert len(dev) + len(source.records("train")) == 3605
  per_class = {}
  for r in dev:
    per_class[r.label] = per_class.get(r.label, 0) + 1
  full = {}
  for r in ImageFolderSource(root).records("train"):
    full[r.label] = full.get(r.label, 0) + 1
  assert set(per_class) == set(full) and len(full) == 20
  for label, count in per_class.items():
    assert count == round(full[label] * 0.1)


def test_training_chooses_on_dev_and_scores_the_eval_split_once(tmp_path):
  from tests import helpers
  from configs import custom_cnn
  config = custom_cnn.get_config("tiny")
  config.data.source = f"folder:{write_synthetic_folder(tmp_path / 'cars')}"
  config.data.dev_fraction = 0.25
  config.data.image_size = (16, 32)
  config.train.num_epochs = 2
  workdir = str(tmp_path / "run")
  summary = helpers.train_and_evaluate(config, workdir)
  with open(f"{workdir}/metrics.jsonl") as f:
    lines = [json.loads(line) for line in f]
  evaluated = {line["split"] for line in lines if line["split"] != "train"}
  assert evaluated == {"dev"}  # Every per-epoch choice was made on dev ...
  assert [l["count"] for l in lines if l["split"] == "dev"] == [6, 6]
  # ... and the eval split was scored once, at the end, on the chosen checkpoint.
  assert summary["evaluated_on"] == "val" and summary["count"] == 12
  assert len(summary["accuracy_ci95"]) == 2
  assert summary["accuracy_ci95"][0] <= summary["accuracy"] <= summary["accuracy_ci95"][1]

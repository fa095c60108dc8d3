"""The study's runs: every model gets the study's data section, once per seed."""

import pytest

from carjax.study import runs
from configs import study as study_config


def test_model_configs_apply_the_shared_data_section():
  config = study_config.get_config("tiny")
  config.data.source = "folder:/somewhere"
  config.data.eval_split = "test"
  configs = runs.model_configs(config)
  assert set(configs) == set(config.models)
  for model_config in configs.values():
    assert model_config.data.source == "folder:/somewhere"
    assert model_config.data.eval_split == "test"
    assert model_config.data.image_size == (32, 32)  # Model-specific fields stay the model's.
  assert config.models.tiny_cnn.data.source == ""  # The study config itself is untouched.


# ------------------------------------------------------------------------------ seeds


def test_every_model_runs_once_per_seed():
  config = study_config.get_config("tiny")
  config.unlock()
  config.seeds = (3, 7)
  configs = runs.model_configs(config)
  assert list(configs) == ["tiny_cnn", "tiny_cnn_seed7", "tiny_cnn_avgpool",
                           "tiny_cnn_avgpool_seed7"]
  assert [c.seed for c in configs.values()] == [3, 7, 3, 7]
  assert runs.model_of_run("tiny_cnn_avgpool_seed7", config.models) == "tiny_cnn_avgpool"
  assert runs.model_of_run("tiny_cnn_seed7", config.models) == "tiny_cnn"
  # Only the seed differs between a model's runs.
  a, b = configs["tiny_cnn"].to_dict(), configs["tiny_cnn_seed7"].to_dict()
  assert {k for k in a if a[k] != b[k]} == {"seed"}


# ------------------------------------------------------------------- options added later


def _without(config, fields):
  """A ConfigDict as a config.json written before `fields` existed."""
  import json  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  recorded = json.loads(config.to_json_best_effort())
  for field in fields:
    section, *middle, name = field.split(".")
    node = recorded[section]
    for part in middle:
      node = node[part]
    del node[name]
  return ml_collections.ConfigDict(recorded)


def test_every_added_option_defaults_to_how_older_runs_trained():
  from carjax.train import rerun  # pylint: disable=g-import-not-at-top
  from configs import custom_cnn, efficientnet_lite0_finetune  # pylint: disable=g-import-not-at-top
  seen = set()
  for module in (custom_cnn, efficientnet_lite0_finetune):
    flat = rerun.flat_config(module.get_config())
    present = {k: v for k, v in rerun.ADDED_OPTIONS.items() if k in flat}
    assert {k: flat[k] for k in present} == present, module.__name__
    seen |= set(present)
  assert seen == set(rerun.ADDED_OPTIONS)  # A misspelt entry would match nothing.


@pytest.mark.parametrize("config_name, option, value", [
    ("custom_cnn", "data.augment.cutmix_prob", 0.5),
    ("custom_cnn", "data.augment.mixup_prob", 1.0),
    ("efficientnet_lite0_finetune", "eval.image_size", (224, 416)),
])
def test_a_run_recorded_before_an_option_existed_matches_at_its_default(config_name, option,
                                                                       value):
  import importlib  # pylint: disable=g-import-not-at-top
  from carjax.train import rerun  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f"configs.{config_name}")
  wanted = module.get_config()
  fields = [k for k in rerun.ADDED_OPTIONS if k in rerun.flat_config(wanted)]
  old_run = _without(wanted, fields)
  assert runs.config_differences(wanted, old_run) == []
  changed = module.get_config()
  changed.update_from_flattened_dict({option: value})
  assert runs.config_differences(changed, old_run) == [option]


def test_the_same_data_folder_named_another_way_is_no_difference(tmp_path, monkeypatch):
  from configs import custom_cnn  # pylint: disable=g-import-not-at-top
  (tmp_path / "data" / "cars20").mkdir(parents=True)
  (tmp_path / "other").mkdir()
  (tmp_path / "link").symlink_to(tmp_path / "data", target_is_directory=True)
  monkeypatch.chdir(tmp_path / "other")
  wanted, run = custom_cnn.get_config(), custom_cnn.get_config()
  wanted.data.source = f"folder:{tmp_path}/data/cars20"
  for same in ("folder:../data/cars20", f"{tmp_path}/link/cars20", "folder:../data/cars20/"):
    run.data.source = same
    assert runs.config_differences(wanted, run) == [], same
  for other in ("folder:../other", "tfds:cars196", "folder:data/cars20"):
    run.data.source = other
    assert runs.config_differences(wanted, run) == ["data.source"], other


def test_the_recipe_table_names_layer_decay_only_when_on():
  from carjax.study import recipes  # pylint: disable=g-import-not-at-top
  from configs import efficientnet_lite0_finetune  # pylint: disable=g-import-not-at-top
  config = efficientnet_lite0_finetune.get_config()
  column = recipes.RECIPE_COLUMNS.index("optimiser")
  assert "layer decay" not in recipes.recipe_row("lite0", config)[column]
  config.train.layer_lr_decay = 0.9
  assert ", layer decay 0.9, wd 0.05" in recipes.recipe_row("lite0", config)[column]


def test_the_recipe_table_names_the_cosine_loss_only_when_on():
  from carjax.study import recipes  # pylint: disable=g-import-not-at-top
  from configs import custom_cnn  # pylint: disable=g-import-not-at-top
  config = custom_cnn.get_config()
  column = recipes.RECIPE_COLUMNS.index("regularisation")
  assert "cosine" not in recipes.recipe_row("cnn", config)[column]
  config.model.head_type = "cosine"
  config.train.loss = "cosine"
  assert recipes.recipe_row("cnn", config)[column].startswith(
      "cosine loss + 0.1 × CE (cosine head), label smoothing 0.1, dropout 0.1")


def test_the_recipe_table_names_frozen_batchnorm_statistics_only_when_frozen():
  from carjax.study import recipes  # pylint: disable=g-import-not-at-top
  from configs import efficientnet_lite0_finetune  # pylint: disable=g-import-not-at-top
  config = efficientnet_lite0_finetune.get_config()
  column = recipes.RECIPE_COLUMNS.index("frozen")
  assert "BatchNorm" not in recipes.recipe_row("lite0", config)[column]
  config.model.freeze_batchnorm = True
  assert recipes.recipe_row("lite0", config)[column] == (
      "`^(stem_|blocks_[0-2]/)`; BatchNorm statistics; from lite0_imagenet")

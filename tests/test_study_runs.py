"""The study's runs: every model gets the study's data section, once per seed."""

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


def test_a_run_recorded_before_an_option_existed_matches_at_its_default():
  import json  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from carjax.train import rerun  # pylint: disable=g-import-not-at-top
  from configs import base, custom_cnn  # pylint: disable=g-import-not-at-top
  # The values that reproduce older runs are the defaults every config starts from.
  defaults = rerun.flat_config(base.get_config())
  assert {k: defaults[k] for k in rerun.ADDED_OPTIONS} == rerun.ADDED_OPTIONS
  wanted = custom_cnn.get_config()
  recorded = json.loads(wanted.to_json_best_effort())
  for field in rerun.ADDED_OPTIONS:  # As a config.json written before these options.
    section, *middle, name = field.split(".")
    node = recorded[section]
    for part in middle:
      node = node[part]
    del node[name]
  old_run = ml_collections.ConfigDict(recorded)
  assert runs.config_differences(wanted, old_run) == []
  with_cutmix = custom_cnn.get_config()
  with_cutmix.data.augment.cutmix_prob = 0.5
  assert runs.config_differences(with_cutmix, old_run) == ["data.augment.cutmix_prob"]


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

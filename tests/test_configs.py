"""Every config loads, is locked, and rejects misspelt overrides; `:tiny` shrinks a config
without a copied file; the study's data section is base's shared part."""

import importlib
import pathlib

import ml_collections
import pytest

from configs import base
from configs import custom_cnn
from configs import study

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
CONFIG_NAMES = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem != "__init__")
# Configs whose get_config takes the "tiny" argument (big_vision's `runlocal`).
TINY = ("custom_cnn", "efficientnet_lite0_finetune", "study")


@pytest.mark.parametrize("name, arg", [(n, None) for n in CONFIG_NAMES] +
                         [(n, "tiny") for n in TINY] + [("study", "distilled")])
def test_config_loads_and_is_locked(name, arg):
  module = importlib.import_module(f"configs.{name}")
  config = module.get_config(arg) if arg else module.get_config()
  assert isinstance(config, ml_collections.ConfigDict)
  if name == "base":
    return
  assert config.is_locked
  with pytest.raises(AttributeError):
    config.train.learnig_rate = 0.1  # The typo a user makes.
  # A study config holds one full training config per model.
  runs = ({**config.models, **config.extra_models} if "models" in config
          else {name: config})
  assert runs
  if arg == "distilled":
    assert config.extra_models.custom_cnn_distilled.train.teacher_workdir == (
        "@efficientnet_lite0")
  for run in runs.values():
    assert run.model.name in ("custom_cnn", "efficientnet")
    assert run.train.batch_size > 0 and run.train.num_epochs > 0
    if arg == "tiny":
      assert tuple(run.data.image_size) == (32, 32) and run.train.batch_size == 4


@pytest.mark.parametrize("name", TINY)
def test_an_unknown_argument_is_refused(name):
  with pytest.raises(ValueError, match="'tiny'"):
    importlib.import_module(f"configs.{name}").get_config("tiney")


def test_tiny_changes_only_what_it_shrinks():
  full, tiny = custom_cnn.get_config(), custom_cnn.get_config("tiny")
  assert tiny.model.stage_widths == (8, 16) and full.model.stage_widths != (8, 16)
  assert tiny.train.optimizer == full.train.optimizer
  assert tiny.train.learning_rate == full.train.learning_rate


def test_study_data_section_is_base_without_the_per_model_fields():
  shared = study.get_config().data
  base_data = base.get_config().data
  assert set(shared) == set(base_data) - set(study.PER_MODEL_DATA_FIELDS)
  # The study's own choices: score on val, choose checkpoints on a dev share of train.
  assert all(shared[k] == base_data[k] for k in shared if k not in ("eval_split", "dev_fraction"))
  assert shared.eval_split == "val" and shared.dev_fraction == 0.1
  assert set(study.get_config("tiny").models) == {"tiny_cnn", "tiny_cnn_avgpool"}


def test_command_line_overrides_and_typos(tmp_path):
  from absl import flags
  from ml_collections import config_flags
  tiny = f"--config={CONFIG_DIR / 'custom_cnn.py'}:tiny"
  # ml_collections finds the overrides to define in the argv it is given.
  argv = ["prog", tiny, "--config.train.learning_rate=0.5", "--config.model.stage_widths=(4,6)"]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  fv(argv)
  assert fv.config.train.learning_rate == 0.5
  assert tuple(fv.config.model.stage_widths) == (4, 6)
  assert tuple(fv.config.data.image_size) == (32, 32)  # `:tiny` reached get_config.
  argv = ["prog", tiny, "--config.train.learnig_rate=0.5"]
  fv2 = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv2, lock_config=True,
                                  sys_argv=argv)
  with pytest.raises(Exception, match="learnig_rate"):
    fv2(argv)

"""Every config loads, is locked, and rejects misspelt overrides."""

import importlib
import pathlib

import ml_collections
import pytest

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
CONFIG_NAMES = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_loads_and_is_locked(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  assert isinstance(config, ml_collections.ConfigDict)
  if name == "base":
    return
  assert config.is_locked
  with pytest.raises(AttributeError):
    config.train.learnig_rate = 0.1  # The typo a user makes.
  # A study config holds one full training config per model.
  runs = dict(config.models) if "models" in config else {name: config}
  assert runs
  for run in runs.values():
    assert run.model.name in ("custom_cnn", "efficientnet")
    assert run.train.batch_size > 0 and run.train.num_epochs > 0


def test_command_line_overrides_and_typos(tmp_path):
  from absl import flags
  from ml_collections import config_flags
  tiny = f"--config={CONFIG_DIR / 'tiny_cnn.py'}"
  # ml_collections finds the overrides to define in the argv it is given.
  argv = ["prog", tiny, "--config.train.learning_rate=0.5", "--config.model.stage_widths=(4,6)"]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  fv(argv)
  assert fv.config.train.learning_rate == 0.5
  assert tuple(fv.config.model.stage_widths) == (4, 6)
  argv = ["prog", tiny, "--config.train.learnig_rate=0.5"]
  fv2 = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv2, lock_config=True,
                                  sys_argv=argv)
  with pytest.raises(Exception, match="learnig_rate"):
    fv2(argv)

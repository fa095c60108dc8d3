"""A study of two tiny CNNs at 32 px for 1 epoch, for tests and smoke runs (seconds on a CPU).

  python -m launch.study --config=configs/tiny_study.py \
      --config.data.source=folder:/path/to/images --workdir=/tmp/tiny_study
"""

import ml_collections

from configs import study
from configs import tiny_cnn


def tiny_cnn_variant() -> ml_collections.ConfigDict:
  """A second, different tiny CNN: average pooling, other widths, no hidden dense layer."""
  c = tiny_cnn.get_config()
  c.model.stage_widths = (6, 12, 12)
  c.model.pooling = "avg"
  c.model.dense_widths = ()
  c.train.learning_rate = 5e-3
  return c


def tiny_efficientnet() -> ml_collections.ConfigDict:
  """EfficientNet-Lite0's layout shrunk to 7 narrow blocks at 32 px, randomly initialised.

  Too slow to train within a unit test on 2 cores (its compile alone takes ~10 s), so the
  tests use it forward-only; a study may still name it under `models`.
  """
  from configs import efficientnet_lite0_finetune  # pylint: disable=g-import-not-at-top
  c = efficientnet_lite0_finetune.get_config()
  c.data.image_size = (32, 32)
  c.data.cache_dir = ""
  c.model.pretrained = ""
  c.model.overrides = ml_collections.ConfigDict(
      {"width": 0.25, "depth": 0.1, "head_channels": 64, "dropout_rate": 0.0,
       "drop_connect_rate": 0.0, "depthwise_implementation": "grouped"})
  c.train.batch_size = 4
  c.train.num_epochs = 1
  c.train.warmup_epochs = 0.5
  c.train.log_every_steps = 1
  c.eval.batch_size = 4
  return c


def get_config() -> ml_collections.ConfigDict:
  c = study.get_config()
  c.unlock()
  c.data.cache_dir = ""
  c.seeds = (0,)  # tests/test_study.py checks the seed fan-out on configs alone.
  c.models = ml_collections.ConfigDict()
  c.models.tiny_cnn = tiny_cnn.get_config()
  c.models.tiny_cnn.train.num_epochs = 1
  c.models.tiny_cnn_avgpool = tiny_cnn_variant()
  c.models.tiny_cnn_avgpool.train.num_epochs = 1
  c.report.samples_per_class = 2
  c.report.augmentation_views = 3
  c.report.feature_map_channels = 4
  c.report.feature_map_layers = ml_collections.ConfigDict(
      {"tiny_efficientnet": ("stem", "stage2", "stage7", "head_conv")})
  c.report.gradcam_photos = 3
  c.report.mistakes_shown = 4
  c.report.inference_batch_size = 8
  c.report.inference_repeats = 2
  c.lock()
  return c

"""A tiny custom CNN for tests and smoke runs: seconds on a CPU, not meant to be accurate.

  python -m launch.train --config=configs/tiny_cnn.py \
      --config.data.source=folder:/path/to/images --workdir=/tmp/tiny
"""

import ml_collections

from configs import custom_cnn


def get_config() -> ml_collections.ConfigDict:
  c = custom_cnn.get_config()
  c.data.image_size = (32, 32)
  c.data.dev_fraction = 0.0  # The tests' folders of a dozen photos hold no dev split.
  c.data.cache_dir = ""
  c.model.stage_widths = (8, 16)
  c.model.convs_per_stage = 1
  c.model.dense_widths = (16,)
  c.train.batch_size = 4
  c.train.num_epochs = 2
  c.train.warmup_epochs = 0.5
  c.train.log_every_steps = 1
  c.eval.batch_size = 4
  c.lock()
  return c

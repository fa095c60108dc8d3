"""The benchmarked models: a name → the project's config, adapted to the benchmark's settings."""

from __future__ import annotations

import ml_collections

from configs import custom_cnn
from configs import efficientnet_b0_scratch
from configs import efficientnet_lite0_finetune

# Benchmark model name → the project config it is taken from.
MODEL_CONFIGS = {
    "custom_cnn": custom_cnn.get_config,
    "tiny_cnn": lambda: custom_cnn.get_config("tiny"),  # Smoke tests only.
    "efficientnet_b0": efficientnet_b0_scratch.get_config,
    "efficientnet_lite0": efficientnet_lite0_finetune.get_config,
}
DEFAULT_MODELS = ("custom_cnn", "efficientnet_b0", "efficientnet_lite0")
OPTIMIZERS = ("adamw", "sgd")


def bench_config(model: str, *, image_size: int, batch_size: int, infer_batch: int,
                 optimizer: str = "adamw") -> ml_collections.ConfigDict:
  """The model's project config at the benchmark's image size, batch and optimizer.

  Everything trains (no pretrained weights, no frozen parameters, no EMA), so that every
  stack does the same work: a full forward, backward and update of the whole network.
  """
  if model not in MODEL_CONFIGS:
    raise ValueError(f"unknown benchmark model {model!r}; expected one of "
                     f"{sorted(MODEL_CONFIGS)}")
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"--optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
  config = MODEL_CONFIGS[model]()
  with config.unlocked():
    config.data.image_size = (image_size, image_size)  # (height, width), as configs hold it.
    config.data.cache_dir = ""
    config.train.batch_size = batch_size
    config.eval.batch_size = infer_batch
    config.train.optimizer = optimizer
    config.train.frozen_params = ""
    config.train.freeze_backbone_epochs = 0.0
    config.train.ema_decay = 0.0
    config.train.class_weights = False
    config.model.pretrained = ""
    config.model.freeze_batchnorm = False
  return config


def efficientnet_variant(config: ml_collections.ConfigDict) -> str | None:
  """'b0', 'lite0', ... for an EfficientNet config, else None."""
  return config.model.variant if config.model.name == "efficientnet" else None

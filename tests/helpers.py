"""Builders shared by the tests."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from carjax.models.efficientnet import EfficientNet, efficientnet


def model_from_conventions(conventions: dict[str, Any], num_classes: int | None = None,
                           **overrides) -> EfficientNet:
  """The EfficientNet that converted weights were made for (default: the source's classes);
  `overrides` sets further `EfficientNet` attributes (dtype, dropout_rate...)."""
  if conventions.get("model") != "efficientnet":
    raise ValueError(f"not EfficientNet weights: model={conventions.get('model')!r}")
  kwargs = dict(padding=conventions["padding"], bn_epsilon=conventions["bn_epsilon"],
                bn_momentum=conventions["bn_momentum"], activation=conventions["activation"],
                se=conventions["se"])
  kwargs.update(overrides)
  return efficientnet(conventions["variant"], num_classes or conventions["num_classes"],
                      **kwargs)


def tiny_cnn_config(source: str):
  """`configs/custom_cnn.py:tiny` reading the image folder `source`."""
  from configs import custom_cnn  # pylint: disable=g-import-not-at-top
  config = custom_cnn.get_config("tiny")
  config.data.source = f"folder:{source}"
  return config


def initial_state(config, num_classes: int = 3, steps_per_epoch: int = 10, **build_kwargs):
  """(setup, a fresh state) of `config` through `carjax.train.setup.build`, as the loop makes
  them (build_kwargs: class_weights, mesh)."""
  from carjax.train import setup as setup_lib  # pylint: disable=g-import-not-at-top
  setup = setup_lib.build(config, num_classes, steps_per_epoch, **build_kwargs)
  return setup, setup.init_state(setup.rngs["init"])


def plain_train_step(config, model, num_classes: int, mean, std, **kwargs):
  """The (not jitted) train step of `config` with the input normalisation (mean, std) in
  place of the config's, and the config's compute dtype."""
  from carjax import models  # pylint: disable=g-import-not-at-top
  from carjax.train import setup as setup_lib  # pylint: disable=g-import-not-at-top
  spec = models.InputSpec(tuple(mean), tuple(std),
                          models.InputSpec.from_config(config.model).dtype)
  return setup_lib.make_steps(config, model, num_classes, input_spec=spec, **kwargs)[0]


def smooth_images(shape, n, seed):
  """Smooth-ish random images (real photos are not white noise), uint8."""
  rng = np.random.default_rng(seed)
  h, w = shape
  base = rng.integers(0, 256, (n, max(2, h // 4), max(2, w // 4), 3)).astype(np.uint8)
  smooth = [np.asarray(Image.fromarray(b).resize((w, h), Image.Resampling.BILINEAR))
            for b in base]
  noise = rng.integers(-20, 21, (n, h, w, 3))
  return np.clip(np.stack(smooth).astype(int) + noise, 0, 255).astype(np.uint8)


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """What `launch.train` does: train, then evaluate the best checkpoint."""
  from carjax import evaluation  # pylint: disable=g-import-not-at-top
  from carjax.train import loop  # pylint: disable=g-import-not-at-top
  return evaluation.evaluate_trained(loop.train(config, workdir))


def bench_record(seconds, images_per_step, steps=1):
  """A benchmark worker's raw measurement record: `seconds` per repeat of `steps` steps."""
  return {"seconds": seconds, "steps_per_repeat": steps, "images_per_step": images_per_step,
          "images_per_repeat": images_per_step * steps}

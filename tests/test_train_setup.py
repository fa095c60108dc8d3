"""carjax/train/setup.py: a state started from converted weights keeps the backbone and
resets the head (and the auxiliary head); weights made for another input convention are
refused."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carjax import models
from carjax.train import setup as setup_lib
from tests import helpers


def _lite0_config_with_fake_imagenet_weights(weights_dir):
  """(Lite0 fine-tune config at 32 px, the 'ImageNet' variables it starts from): weights of
  the right layout, converted into `weights_dir`."""
  from carjax import checkpoint
  from configs import efficientnet_lite0_finetune
  config = efficientnet_lite0_finetune.get_config()
  config.data.image_size = (32, 32)
  config.model.pretrained = str(weights_dir)
  imagenet_model = models.build_model(config.model, 1000)
  imagenet = imagenet_model.init(jax.random.key(7), jnp.zeros((1, 32, 32, 3)), train=False)
  # Non-trivial statistics, so a pretrained value cannot equal a fresh one by accident.
  imagenet = jax.tree.map(lambda a: np.asarray(a) + 0.25, imagenet)
  checkpoint.save_converted(config.model.pretrained, imagenet, dict(
      model="efficientnet", variant="lite0", num_classes=1000,
      padding=imagenet_model.padding, bn_epsilon=imagenet_model.bn_epsilon,
      activation=imagenet_model.activation, se=imagenet_model.se,
      input_mean=list(config.model.input_mean), input_std=list(config.model.input_std)))
  return config, imagenet


def test_state_from_pretrained_keeps_backbone_and_resets_head(tmp_path):
  config, imagenet = _lite0_config_with_fake_imagenet_weights(tmp_path / "weights")
  setup, state = helpers.initial_state(config, 5, aux_classes=4)
  model = setup.model

  for zero_head in (True, False):
    config.init.zero_head = zero_head
    started = setup_lib.state_from_pretrained(state, model, config)
    for key in ("params", "batch_stats"):
      for path, leaf in jax.tree_util.tree_flatten_with_path(getattr(started, key))[0]:
        name = jax.tree_util.keystr(path)
        if key == "params" and "head" in name:
          continue
        source = imagenet[key]
        for p in path:
          source = source[p.key]
        np.testing.assert_array_equal(np.asarray(leaf), source, err_msg=name)
    assert started.params["head"]["kernel"].shape == (1280, 5)
    assert started.params["aux_head"]["kernel"].shape == (1280, 4)
    for name in ("head", "aux_head"):
      head = started.params[name]
      if zero_head:
        assert not np.any(np.asarray(head["kernel"])) and not np.any(np.asarray(head["bias"]))
      else:
        np.testing.assert_array_equal(np.asarray(head["kernel"]),
                                      np.asarray(state.params[name]["kernel"]))
        assert np.std(np.asarray(head["kernel"])) > 0.01

  config.model.input_std = (1.0, 1.0, 1.0)
  with pytest.raises(ValueError, match="input_std"):
    setup_lib.state_from_pretrained(state, model, config)


def test_weight_average_from_pretrained_weights_has_buffers_of_its_own(tmp_path):
  # The train step donates the whole state: one buffer as both params and ema_params made
  # XLA refuse the first step of every EMA fine-tune ("donate the same buffer twice").
  config, _ = _lite0_config_with_fake_imagenet_weights(tmp_path / "weights")
  config.train.ema_decay = 0.99
  setup, state = helpers.initial_state(config, 5)
  started = setup_lib.state_from_pretrained(state, setup.model, config)
  jax.tree.map(np.testing.assert_array_equal, started.ema_params, started.params)
  donated = jax.jit(lambda s: jax.tree.map(lambda x: x + 1, (s.params, s.ema_params)),
                    donate_argnums=0)
  params, ema_params = donated(started)
  jax.tree.map(np.testing.assert_array_equal, ema_params, params)

"""carjax/train/setup.py: a state started from converted weights keeps the backbone and
resets the head; weights made for another input convention are refused."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carjax import models
from carjax.train import setup as setup_lib
from tests import helpers


def test_state_from_pretrained_keeps_backbone_and_resets_head(tmp_path):
  from carjax import checkpoint
  from configs import efficientnet_lite0_finetune
  config = efficientnet_lite0_finetune.get_config()
  config.data.image_size = (32, 32)
  config.model.pretrained = str(tmp_path / "weights")
  imagenet_model = models.build_model(config.model, 1000)
  imagenet = imagenet_model.init(jax.random.key(7), jnp.zeros((1, 32, 32, 3)), train=False)
  # Non-trivial statistics, so a pretrained value cannot equal a fresh one by accident.
  imagenet = jax.tree.map(lambda a: np.asarray(a) + 0.25, imagenet)
  checkpoint.save_converted(config.model.pretrained, imagenet, dict(
      model="efficientnet", variant="lite0", num_classes=1000,
      padding=imagenet_model.padding, bn_epsilon=imagenet_model.bn_epsilon,
      activation=imagenet_model.activation, se=imagenet_model.se,
      input_mean=list(config.model.input_mean), input_std=list(config.model.input_std)))
  setup, state = helpers.initial_state(config, 5)
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
    head = started.params["head"]
    assert head["kernel"].shape == (1280, 5)
    if zero_head:
      assert not np.any(np.asarray(head["kernel"])) and not np.any(np.asarray(head["bias"]))
    else:
      np.testing.assert_array_equal(np.asarray(head["kernel"]),
                                    np.asarray(state.params["head"]["kernel"]))
      assert np.std(np.asarray(head["kernel"])) > 0.01

  config.model.input_std = (1.0, 1.0, 1.0)
  with pytest.raises(ValueError, match="input_std"):
    setup_lib.state_from_pretrained(state, model, config)

"""carjax/train/optim.py: the learning-rate schedules of the parameter groups."""

from __future__ import annotations

import pytest

from carjax.train import optim
from tests import helpers


def test_backbone_frozen_during_head_warmup():
  config = helpers.tiny_cnn_config("unused")
  config.train.freeze_backbone_epochs = 1.0
  config.train.num_epochs = 3
  schedules = optim.make_schedules(config.train, steps_per_epoch=10)
  assert all(float(schedules["backbone"](s)) == 0.0 for s in range(11))
  assert float(schedules["backbone"](13)) > 0.0 and float(schedules["head"](3)) > 0.0


def test_the_aux_head_trains_with_the_head_group():
  params = {"head": {"kernel": 0}, "aux_head": {"kernel": 0, "bias": 0},
            "stage1": {"conv0": {"kernel": 0}}, "dense0": {"kernel": 0}}
  groups = optim.param_groups(params, frozen_pattern=r"^stage1/")
  assert groups == {"head": {"kernel": "head"}, "aux_head": {"kernel": "head", "bias": "head"},
                    "stage1": {"conv0": {"kernel": "frozen"}},
                    "dense0": {"kernel": "backbone"}}


def _abstract_params(config):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from carjax import models  # pylint: disable=g-import-not-at-top
  model = models.build_model(config.model, 20)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
  return variables["params"]


def test_layer_depths_run_from_the_stem_to_the_top():
  from carjax import models  # pylint: disable=g-import-not-at-top
  from configs import custom_cnn, efficientnet_lite0_finetune  # pylint: disable=g-import-not-at-top
  lite0 = models.layer_depths(_abstract_params(efficientnet_lite0_finetune.get_config()))
  assert lite0 == {"stem_conv": 0, "stem_bn": 0, **{f"blocks_{i}": i + 1 for i in range(16)},
                   "top_conv": 17, "top_bn": 17}
  cnn = models.layer_depths(_abstract_params(custom_cnn.get_config()))
  assert cnn == {"stage1": 0, "stage2": 1, "stage3": 2, "stage4": 3, "stage5": 4, "dense0": 5}
  with pytest.raises(ValueError, match="no depth is known for the layer 'mystery'"):
    models.layer_depths({"stem_conv": {}, "mystery": {}})


def test_layer_decay_scales_each_layers_update_by_its_depth():
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  config = helpers.tiny_cnn_config("unused")
  config.train.warmup_epochs = 0.0
  config.train.frozen_params = r"^stage1/"
  abstract = _abstract_params(config)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda a: rng.normal(size=a.shape).astype(np.float32), abstract)
  grads = jax.tree.map(lambda a: rng.normal(size=a.shape).astype(np.float32), abstract)

  def first_update(layer_lr_decay):
    config.train.layer_lr_decay = layer_lr_decay
    tx, _ = optim.make_optimizer(config.train, 10, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    return updates

  plain, decayed = first_update(1.0), first_update(0.5)
  from carjax import models  # pylint: disable=g-import-not-at-top
  depths = models.layer_depths(params)
  top = max(depths.values())
  assert set(depths) | {"head"} == set(params) and top >= 2
  for name in params:
    factor = 1.0 if name == "head" else 0.5 ** (top - depths[name])
    for got, want in zip(jax.tree.leaves(decayed[name]), jax.tree.leaves(plain[name])):
      if name == "stage1":
        assert not np.any(got) and not np.any(want)  # Frozen stays frozen.
      else:
        np.testing.assert_allclose(got, factor * np.asarray(want), rtol=1e-6)

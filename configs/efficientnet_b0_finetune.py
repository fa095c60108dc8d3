"""EfficientNet-B0 fine-tuned from weights a user brings (Keras, timm or torchvision files).

Convert once, then fine-tune with the Lite0 recipe (whole network, frozen stem):

  python -m launch.convert_weights --source=keras --input=efficientnetb0.weights.h5 \
      --output=runs/weights/b0_keras
  python -m launch.train --config=configs/efficientnet_b0_finetune.py \
      --config.model.pretrained=runs/weights/b0_keras \
      --config.data.source=folder:../shared/data/cars20 --workdir=runs/b0_finetune

For timm/torchvision weights also set --config.model.convention=timm (or torchvision) and
the normalisation their conventions.json records (ImageNet mean/std, the default here).
No B0 ImageNet weights are available on the reference machine, so this was not run there.
"""

import ml_collections

from carjax import models
from configs import efficientnet_lite0_finetune


def get_config() -> ml_collections.ConfigDict:
  c = efficientnet_lite0_finetune.get_config()
  c.model.variant = "b0"
  c.model.pretrained = ""  # Required: the directory written by launch/convert_weights.py.
  # Converted B0 weights (Keras, timm, torchvision) expect ImageNet's normalisation.
  c.model.input_mean = models.IMAGENET_MEAN
  c.model.input_std = models.IMAGENET_STD
  c.model.overrides.drop_connect_rate = 0.2
  return c

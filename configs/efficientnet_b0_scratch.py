"""EfficientNet-B0 from random initialisation: the study's "own architecture at scale" control.

Same data, resolution and augmentation as the Lite0 fine-tune, no pretrained weights, a
longer schedule and a higher learning rate, as training from scratch needs:

  python -m launch.train --config=configs/efficientnet_b0_scratch.py \
      --config.data.source=folder:../shared/data/cars20 --workdir=runs/b0_scratch

Not run to completion on the 2-core reference machine (hours); see RESULTS.md.
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.data.image_size = (224, 224)
  c.model.name = "efficientnet"
  c.model.variant = "b0"
  # Padding/BatchNorm conventions of the weights: 'tf' (Keras, TF, Lite), 'timm', 'torchvision'.
  c.model.convention = "tf"
  c.model.overrides = ml_collections.ConfigDict({"dropout_rate": 0.2,
                                                 "drop_connect_rate": 0.2})
  c.train.num_epochs = 60
  c.train.learning_rate = 2e-3
  c.train.warmup_epochs = 3.0
  c.train.weight_decay = 0.05
  c.lock()
  return c

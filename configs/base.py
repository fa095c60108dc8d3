"""Fields shared by every carjax run; the experiment configs derive from `get_config()` here.

Every field can be overridden on the command line as `--config.section.field=value`; the
returned ConfigDict is locked, so a misspelt field is an error rather than a silent no-op.
"""

import ml_collections

from carjax.models import IMAGENET_MEAN, IMAGENET_STD


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  # 'folder:/path' (an image folder) or 'tfds:NAME'. Empty: the run says what to do.
  c.data.source = ""
  c.data.train_split = "train"
  c.data.eval_split = "val"
  # (height, width) in pixels; `--config.data.image_size=256` means a 256×256 square.
  c.data.image_size = (224, 224)
  # The photos are wide bounding-box crops: 'squash' keeps the whole car (measured best,
  # ../shared/notes/reference-finetune.md); 'crop' and 'pad' are the alternatives.
  c.data.resize_mode = "squash"
  c.data.cache_dir = "~/.cache/carjax"  # Decoded images; empty string: memory only.
  c.data.num_workers = 0  # Decoding threads; 0 picks the number of CPUs.
  c.data.split_seed = 0  # For sources without split folders.
  c.data.val_fraction = 0.15
  # > 0: this share of every class of the train split becomes "dev" (seeded by split_seed):
  # checkpoints are chosen on dev, and eval_split is scored once at the end, as the test
  # figure (carjax/data/dev_split.py). 0: eval_split both chooses and scores.
  c.data.dev_fraction = 0.0
  c.data.test_fraction = 0.15
  c.data.tfds_data_dir = ""
  # An auxiliary head on a second label of every training image (issue 13): a CSV path
  # (relative to the current directory, like data.source); empty: off. Its column
  # `aux_labels_key` names each image by its path relative to the image folder's root
  # ('train/Acura/x.jpg'), `aux_labels_column` holds the label (cars20's MANIFEST.csv has the
  # car `model` beside the make). Every training image needs a label; the head trains beside
  # the make head (config.train.aux_loss_weight) and nothing else ever sees it: evaluation,
  # prediction and export output the makes only. Image-folder sources only.
  c.data.aux_labels_csv = ""
  c.data.aux_labels_key = "relpath"
  c.data.aux_labels_column = "model"
  c.data.tfds_manual_dir = ""
  c.data.augment = ml_collections.ConfigDict()
  c.data.augment.crop_scale = (0.35, 1.0)
  c.data.augment.crop_ratio = (0.75, 1.333)
  c.data.augment.flip = True
  c.data.augment.color_jitter = 0.2
  # CutMix: with this probability per batch, a box of every image comes from another image,
  # and the loss mixes the two labels by area (λ ~ Beta(alpha, alpha)). 0: off.
  c.data.augment.cutmix_prob = 0.0
  c.data.augment.cutmix_alpha = 1.0
  # mixup: with this probability per batch, every image is blended with another, λ × its own
  # + (1 − λ) × the other's, and so are the two labels in the loss (λ ~ Beta(alpha, alpha),
  # one λ a batch). 0: off; at most one of CutMix and mixup.
  c.data.augment.mixup_prob = 0.0
  c.data.augment.mixup_alpha = 0.2

  c.model = ml_collections.ConfigDict()
  c.model.name = ""
  # 'bfloat16': mixed precision, activations and matmuls in bfloat16 while parameters and
  # optimiser state stay in param_dtype (float32); losses and BatchNorm statistics are float32.
  c.model.dtype = "float32"
  c.model.param_dtype = "float32"
  c.model.input_mean = IMAGENET_MEAN
  c.model.input_std = IMAGENET_STD
  # True: BatchNorm uses its running statistics in training too and never updates them.
  c.model.freeze_batchnorm = False
  c.model.pretrained = ""  # A directory written by launch/convert_weights.py.

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 32
  c.train.num_epochs = 10
  c.train.optimizer = "adamw"  # or 'sgd' (Nesterov momentum).
  c.train.learning_rate = 1e-3  # Peak rate of the backbone (the whole model if no split).
  c.train.head_lr_multiplier = 1.0  # Head's peak rate = learning_rate × this.
  # Layer-wise learning-rate decay: the backbone layer at depth k of K (models.layer_depths)
  # trains at learning_rate × this^(K − k). 1.0: off.
  c.train.layer_lr_decay = 1.0
  c.train.momentum = 0.9
  c.train.weight_decay = 0.05  # Kernels only.
  c.train.warmup_epochs = 1.0
  c.train.freeze_backbone_epochs = 0.0  # Head-only training first (fine-tuning).
  # Regex over '/'-joined parameter paths that are not trained at all (e.g. the stem and
  # first blocks of a pretrained network): XLA then skips their backward pass.
  c.train.frozen_params = ""
  c.train.label_smoothing = 0.1
  # 'cross_entropy', or 'cosine': the make's loss is 1 − cos(logits, one-hot label) +
  # cosine_ce_weight × CE (Barz & Denzler 2020; meant with the CNN's model.head_type =
  # 'cosine', whose logits are scaled cosines).
  c.train.loss = "cross_entropy"
  c.train.cosine_ce_weight = 0.1
  # With config.data.aux_labels_csv: loss = CE(make) + this × CE(auxiliary label), both
  # label-smoothed alike.
  c.train.aux_loss_weight = 0.5
  # Knowledge distillation: a finished run of the same makes and training photos (e.g. the
  # fine-tuned Lite0) whose logits for each training photo the model also learns from
  # (carjax/train/teacher.py): the make's loss is (1 − w) × CE + w × T² × KL(teacher ‖
  # model) at temperature T. A model so taught is not trained from scratch. "": off.
  c.train.teacher_workdir = ""
  c.train.distill_weight = 0.5  # w
  c.train.distill_temperature = 2.0  # T
  c.train.class_weights = False  # Inverse-frequency weighting of the loss.
  c.train.grad_clip_norm = 0.0  # 0: off.
  c.train.ema_decay = 0.0  # 0: no EMA of weights; e.g. 0.999 evaluates the EMA.
  c.train.log_every_steps = 10
  # Micro-batches per optimiser step: the global batch is processed k micro-batches at a
  # time (batch_size / k each) inside one step, for batches larger than memory holds.
  c.train.grad_accum_steps = 1

  # The device mesh (carjax/train/sharding.py): batch split over every device; fsdp > 1
  # also splits parameters and optimiser state over groups of `fsdp` devices.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.fsdp = 1
  c.mesh.fsdp_min_size = 2 ** 14  # Arrays with fewer elements stay replicated.

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 64
  c.eval.every_epochs = 1
  c.eval.best_metric = "accuracy"  # Any key of the eval summary, e.g. 'macro_f1'.
  # Average each image's class probabilities with its mirror image's (2× inference cost),
  # in the per-epoch evaluations, evaluate, predict, the study and export alike.
  c.eval.flip_tta = False
  # (height, width) the per-epoch evaluations, evaluate, predict, the study and export classify
  # at; () = data.image_size. Larger than the training size is "train low, test high": the
  # networks are convolutional, and random crops show objects larger in training than a
  # whole photo does at the same size.
  c.eval.image_size = ()

  c.checkpoint = ml_collections.ConfigDict()
  # Besides every epoch's end, `checkpoints/last` is also saved every N steps and every M
  # minutes (0: off), so a kill in a long epoch loses minutes, not the epoch.
  c.checkpoint.every_steps = 0
  c.checkpoint.every_minutes = 10.0

  c.init = ml_collections.ConfigDict()
  c.init.resume_from = ""  # Another workdir whose last checkpoint starts this run.
  # Fine-tuning from config.model.pretrained: the new classifier head starts at zero.
  c.init.zero_head = True
  return c

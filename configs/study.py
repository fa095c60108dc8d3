r"""The study in one command: the custom CNN from scratch against fine-tuned EfficientNet-Lite0.

  python -m launch.study --config=configs/study.py \
      --config.data.source=folder:../shared/data/cars20 --workdir=runs/study

Every model named in `models` trains (or resumes) in <workdir>/<model name>/ on the same data
and split (the shared `data` section below overrides each model's own), is evaluated on the
same held-out split, and <workdir>/report/ receives report.md, report.html, figures and
tables. A finished run already in <workdir>/<model name>/ (moved or symlinked there) is only
evaluated and reported. With --config.train_missing=False nothing is trained: the report
covers the runs that exist (an unfinished one with its best checkpoint so far) and lists
the others as missing. A model with two seeds or more also gets an extra row, clearly
labelled: the ensemble of its seeds (`report.seed_ensembles`), never its headline figure.

Reached (2026-12-07, cars20, this command run end to end; docs/study/report.md): val accuracy,
mean over seeds 0 and 1 (lowest–highest), checkpoints chosen on dev: custom_cnn 0.708
(0.692–0.724), efficientnet_lite0 0.884 (0.881–0.888); McNemar p = 1.2e-19 between them.
1 h 35 min wall on a 2-vCPU AMD EPYC, timed (~24 and ~23 min a seed); about 3 h estimated on
the slower 2-vCPU Intel Xeon of earlier sessions.

`--config=configs/study.py:tiny` (`get_config("tiny")`) is a study of two tiny CNNs at 32 px for
1 epoch, for tests and smoke runs (seconds on a CPU). `--config=configs/study.py:distilled`
adds an extra row: the custom CNN distilled from the fine-tuned Lite0 of the same seed
(`config.train.teacher_workdir`; not from scratch), ~50 more minutes a seed here.
"""

import ml_collections

from configs import base
from configs import custom_cnn
from configs import efficientnet_lite0_finetune

# Fields of `base`'s data section that each model keeps as its own config sets them (they
# shape its input and augmentation); every other data field is the study's, shared by all.
PER_MODEL_DATA_FIELDS = ("image_size", "resize_mode", "num_workers", "augment")


def shared_data() -> ml_collections.ConfigDict:
  """The data fields every model of a study shares (copied over each model's `data`):
  `base`'s data section without `PER_MODEL_DATA_FIELDS`."""
  d = base.get_config().data
  for field in PER_MODEL_DATA_FIELDS:
    del d[field]
  # The held-out test split every model is scored on, once, with its chosen checkpoint.
  d.eval_split = "val"
  # Checkpoints are chosen on this share of train (a seeded, stratified "dev" split), never
  # on the test split: 0.1 of cars20's train is 361 photos.
  d.dev_fraction = 0.1
  return d


def report_options() -> ml_collections.ConfigDict:
  r = ml_collections.ConfigDict()
  r.seed = 0  # Which photos the sample grid and Grad-CAM show.
  r.samples_per_class = 4
  r.augmentation_photo = 0  # Index into the train split (sorted by file name).
  r.augmentation_views = 7
  r.feature_map_photo = 0  # Index into the held-out split (sorted by file name).
  r.feature_map_channels = 8  # The most active channels of each layer.
  # Layers shown per model name; a model not listed shows every layer it sows.
  r.feature_map_layers = ml_collections.ConfigDict(
      {"efficientnet_lite0": ("stem", "stage1", "stage2", "stage4", "stage6", "head_conv")})
  r.gradcam_photos = 6  # One per make, round-robin, from the held-out split.
  # The layer whose map Grad-CAM weighs, per model name (default: the last feature map).
  # The CNN's last map is 2×2 at 128 px; its stage 4 (4×4) still carries class evidence.
  r.gradcam_layers = ml_collections.ConfigDict({"custom_cnn": "stage4"})
  r.gradcam_target = "predicted"  # or 'true': whose class evidence the heat map shows.
  r.mistakes_shown = 8
  # Extra rows in the answer: each model's seeds as one ensemble (mean probabilities).
  r.seed_ensembles = True
  r.inference_batch_size = 32
  r.inference_repeats = 5  # Timed after one warm-up batch; the median is reported.
  # The Keras study's own figures, shown beside ours (its split differs from ours).
  r.reference_rows = ml_collections.ConfigDict({
      "keras_cnn": {"label": "the study's own CNN (Keras, as reported)",
                    "metric": "weighted_precision", "value": 0.53},
      "keras_b0": {"label": "the study's fine-tuned EfficientNet-B0 (Keras, as reported)",
                   "metric": "weighted_precision", "value": 0.77}})
  return r


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The study; `arg="tiny"` gives the tiny smoke-test study."""
  if arg not in (None, "", "tiny", "distilled"):
    raise ValueError(f"configs/study.py takes no argument, 'tiny' or 'distilled', got {arg!r}")
  c = ml_collections.ConfigDict()
  c.data = shared_data()
  c.models = ml_collections.ConfigDict()
  # Every model trains once per seed (<workdir>/<model>/ for the first, <model>_seed<k>/ for
  # the others); the report gives each figure's mean and spread over the seeds.
  c.seeds = (0, 1)
  if arg == "tiny":
    c.data.cache_dir = ""
    c.models.tiny_cnn = custom_cnn.get_config("tiny")
    c.models.tiny_cnn_avgpool = tiny_cnn_variant()
    for model in c.models.values():
      model.train.num_epochs = 1
    c.seeds = (0,)  # tests/test_study_runs.py checks the seed fan-out on configs alone.
  else:
    c.models.custom_cnn = custom_cnn.get_config()
    c.models.efficientnet_lite0 = efficientnet_lite0_finetune.get_config()
  # Extra rows, never headline ones: run and reported like `models`, after them.
  c.extra_models = ml_collections.ConfigDict()
  if arg == "distilled":
    # The custom CNN taught by the fine-tuned Lite0 run of the same seed: not from scratch.
    # Weight and temperature are carjax's defaults (0.5, 2), not yet tuned on dev.
    c.extra_models.custom_cnn_distilled = custom_cnn.get_config()
    c.extra_models.custom_cnn_distilled.train.teacher_workdir = "@efficientnet_lite0"
  # False: train nothing, report the runs already in the workdir (e.g. while one still trains).
  c.train_missing = True
  c.report = report_options()
  if arg == "tiny":
    shrink_report(c.report)
  c.lock()
  return c


def tiny_cnn_variant() -> ml_collections.ConfigDict:
  """A second, different tiny CNN: average pooling, other widths, no hidden dense layer."""
  c = custom_cnn.get_config("tiny")
  c.model.stage_widths = (6, 12, 12)
  c.model.pooling = "avg"
  c.model.dense_widths = ()
  c.train.learning_rate = 5e-3
  return c


def shrink_report(r: ml_collections.ConfigDict) -> None:
  """The tiny study's report: few photos and views, quick timing."""
  r.samples_per_class = 2
  r.augmentation_views = 3
  r.feature_map_channels = 4
  r.feature_map_layers = ml_collections.ConfigDict(
      {"tiny_efficientnet": ("stem", "stage2", "stage7", "head_conv")})
  r.gradcam_photos = 3
  r.mistakes_shown = 4
  r.inference_batch_size = 8
  r.inference_repeats = 2

r"""The study in one command: the custom CNN from scratch against fine-tuned EfficientNet-Lite0.

  python -m launch.study --config=configs/study.py \
      --config.data.source=folder:../shared/data/cars20 --workdir=runs/study

Every model named in `models` trains (or resumes) in <workdir>/<model name>/ on the same data
and split (the shared `data` section below overrides each model's own), is evaluated on the
same held-out split, and <workdir>/report/ receives report.md, report.html, figures and
tables. A finished run already in <workdir>/<model name>/ (moved or symlinked there) is only
evaluated and reported. With --config.train_missing=False nothing is trained: the report
covers the runs that exist (an unfinished one with its best checkpoint so far) and lists
the others as missing.
"""

import importlib

import ml_collections

from configs import custom_cnn


def shared_data() -> ml_collections.ConfigDict:
  """The data fields every model of a study shares (copied over each model's `data`)."""
  d = ml_collections.ConfigDict()
  d.source = ""  # 'folder:/path' or 'tfds:NAME', as for launch/train.py.
  d.train_split = "train"
  # The held-out test split every model is scored on, once, with its chosen checkpoint.
  d.eval_split = "val"
  d.cache_dir = "~/.cache/carjax"
  d.split_seed = 0
  # Checkpoints are chosen on this share of train (a seeded, stratified "dev" split), never
  # on the test split: 0.1 of cars20's train is 361 photos.
  d.dev_fraction = 0.1
  d.val_fraction = 0.15
  d.test_fraction = 0.15
  d.tfds_data_dir = ""
  d.tfds_manual_dir = ""
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
  r.inference_batch_size = 32
  r.inference_repeats = 5  # Timed after one warm-up batch; the median is reported.
  # The Keras study's own figures, shown beside ours (its split differs from ours).
  r.reference_rows = ml_collections.ConfigDict({
      "keras_cnn": {"label": "the study's own CNN (Keras, as reported)",
                    "metric": "weighted_precision", "value": 0.53},
      "keras_b0": {"label": "the study's fine-tuned EfficientNet-B0 (Keras, as reported)",
                   "metric": "weighted_precision", "value": 0.77}})
  return r


def optional_config(module_name: str):
  """`configs.<module_name>.get_config()`, or None while that config does not exist yet."""
  try:
    return importlib.import_module(f"configs.{module_name}").get_config()
  except ModuleNotFoundError as e:
    if e.name != f"configs.{module_name}":
      raise
    return None


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.data = shared_data()
  c.models = ml_collections.ConfigDict()
  c.models.custom_cnn = custom_cnn.get_config()
  lite0 = optional_config("efficientnet_lite0_finetune")
  if lite0 is not None:
    c.models.efficientnet_lite0 = lite0
  # Every model trains once per seed (<workdir>/<model>/ for the first, <model>_seed<k>/ for
  # the others); the report gives each figure's mean and spread over the seeds.
  c.seeds = (0, 1)
  # False: train nothing, report the runs already in the workdir (e.g. while one still trains).
  c.train_missing = True
  c.report = report_options()
  c.lock()
  return c

"""What a benchmark run measures: its settings, the stacks and the process environments.

`Settings` validates the launcher's flags; `stack_keys` expands them into every (stack, torch
layout, environment) a round measures.
"""

from __future__ import annotations

import dataclasses
import os

from benchmarks import model_configs as configs

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STACKS = ("carjax", "keras", "torch")
# Process environments a stack can be measured in. "shipped": carjax as it ships (glibc malloc
# tuning of carjax.host_runtime, per-model XLA:CPU options), Keras and PyTorch as users run
# them (glibc's defaults); "hugepages": every stack under carjax's malloc tuning; "glibc": every
# stack under glibc's defaults; "no_xla_options": carjax with the malloc tuning but XLA's
# default CPU options; "warm_cache": carjax as shipped, started again on the compilation
# cache its "shipped" run of the same round has just filled (the warm first call).
ENV_VARIANTS = ("shipped", "hugepages", "glibc", "no_xla_options", "warm_cache")
_CARJAX_ONLY_VARIANTS = ("no_xla_options", "warm_cache")


@dataclasses.dataclass
class Settings:
  models: tuple[str, ...] = configs.DEFAULT_MODELS
  stacks: tuple[str, ...] = STACKS
  torch_layouts: tuple[str, ...] = ("channels_last", "nchw")
  image_size: int = 224
  train_batch: int = 32
  infer_batch: int = 64
  num_classes: int = 20
  optimizer: str = "adamw"
  rounds: int = 3
  repeats: int = 5
  steps: int = 3
  warmup: int = 2
  threads: int = 2
  tf_inter_op_threads: int = 1
  env_variants: tuple[str, ...] = ("shipped",)
  xla_flags: str = ""
  jax_platforms: str = "cpu"
  data: str = ""  # An image folder (cars20); empty: pipeline and end-to-end skipped.
  data_limit: int = 0  # Use only this many images per split (0: all).
  skip_pipeline: bool = False
  profile_dir: str = ""
  task_timeout: int = 3600
  command: str = ""

  def __post_init__(self):
    for model in self.models:
      if model not in configs.MODEL_CONFIGS:
        raise ValueError(f"unknown model {model!r}; expected some of "
                         f"{sorted(configs.MODEL_CONFIGS)}")
    for stack in self.stacks:
      if stack not in STACKS:
        raise ValueError(f"unknown stack {stack!r}; expected some of {STACKS}")
    for name in ("image_size", "train_batch", "infer_batch", "num_classes", "rounds",
                 "repeats", "steps", "threads"):
      if getattr(self, name) < 1:
        raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
    if self.warmup < 0:
      raise ValueError(f"--warmup must be >= 0, got {self.warmup}")
    for variant in self.env_variants:
      if variant not in ENV_VARIANTS:
        raise ValueError(f"unknown environment variant {variant!r}; expected some of "
                         f"{ENV_VARIANTS}")
    if self.optimizer not in configs.OPTIMIZERS:
      raise ValueError(f"--optimizer must be one of {configs.OPTIMIZERS}")


def default_data_dir() -> str:
  """cars20 in $CARJAX_SHARED_DATA, else in ../shared/data beside the repository."""
  root = os.environ.get("CARJAX_SHARED_DATA",
                        os.path.join(os.path.dirname(REPO_ROOT), "shared", "data"))
  return os.path.join(root, "cars20")


def stack_keys(settings: Settings) -> list[tuple[str, str, str | None, str]]:
  """(key, stack, torch layout, environment variant) of every measured stack variant.

  Variants that would repeat another (carjax "hugepages" is carjax as shipped; Keras and PyTorch
  "glibc" are those stacks as shipped) are left out.
  """
  keys = []
  for variant in settings.env_variants:
    for stack in settings.stacks:
      if variant in _CARJAX_ONLY_VARIANTS and stack != "carjax":
        continue
      if (variant == "hugepages" and stack == "carjax") or (variant == "glibc" and stack != "carjax"):
        continue
      suffix = "" if variant == "shipped" else f"+{variant}"
      if stack == "torch":
        keys += [(f"torch_{layout}{suffix}", "torch", layout, variant)
                 for layout in settings.torch_layouts]
      else:
        keys.append((f"{stack}{suffix}", stack, None, variant))
  return keys

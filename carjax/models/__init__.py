"""Model registry and the models' input contract.

`build_model` turns a config's `model` section into a Flax module. Every model takes NHWC
float input already normalised as `(pixels - mean) / std` and implements `__call__(x, *, train)`,
`features(x, *, train)` (the last feature map, for Grad-CAM) and `classify(features, *, train)`;
its classifier is a submodule named `head`. Built with `aux_classes > 0`, a model also has an
auxiliary classifier `aux_head` on the same features, which only `return_aux=True` calls
(training on a second label); `without_aux_head` drops it for inference.

The input contract is written once, here: `InputSpec` (mean, std and compute dtype of a model)
turns pixels on the 0..255 scale into the model's input, `apply_pixels` applies a model to
them, and `init_variables` initialises a model for images of a given (height, width). Training,
inference, export and the explanations all go through these.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import ml_collections
import flax.linen as nn
import jax.numpy as jnp

from carjax.models.cnn import CustomCNN

# ImageNet's pixel mean and std on the 0..255 scale (the configs' default normalisation and
# that of converted torchvision/timm weights).
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


# The classifiers, made for a run's own classes: never taken from pretrained weights, and
# trained in the optimiser's 'head' group.
CLASSIFIER_HEADS = ("head", "head_log_scale", "aux_head")


def _layer_position(name: str) -> tuple[int, int]:
  """Where a top-level layer of a carjax model sits, input side first."""
  if name.startswith("stem_"):  # EfficientNet's stem convolution and its BatchNorm.
    return (0, 0)
  numbered = re.fullmatch(r"(?:blocks_|stage)(\d+)", name)  # EfficientNet / the custom CNN.
  if numbered:
    return (1, int(numbered.group(1)))
  dense = re.fullmatch(r"dense(\d+)", name)  # The custom CNN's dense layers after pooling.
  if dense:
    return (2, int(dense.group(1)))
  if name.startswith("top_"):  # EfficientNet's last 1×1 convolution and its BatchNorm.
    return (3, 0)
  raise ValueError(f"no depth is known for the layer {name!r}: layer-wise learning-rate "
                   f"decay knows EfficientNet's and the custom CNN's layers")


def layer_depths(params) -> dict[str, int]:
  """The depth of each top-level layer of `params`, 0 at the input (the classifier heads left
  out): the order layer-wise learning-rate decay follows. EfficientNet: the stem 0, blocks_i
  i + 1, the top convolution last; the custom CNN: its stages, then its dense layers."""
  names = [name for name in params if name not in CLASSIFIER_HEADS]
  positions = sorted({_layer_position(name) for name in names})
  return {name: positions.index(_layer_position(name)) for name in names}


def _dtype(name: str, option: str):
  try:
    return _DTYPES[name]
  except KeyError:
    raise ValueError(f"{option} must be one of {sorted(_DTYPES)}, got {name!r}") from None


def build_model(model_config: ml_collections.ConfigDict, num_classes: int,
                aux_classes: int = 0) -> nn.Module:
  """Builds the module named by `model_config.name` for `num_classes` outputs (and an
  auxiliary head of `aux_classes` outputs when > 0)."""
  dtype = _dtype(model_config.get("dtype", "float32"), "config.model.dtype")
  param_dtype = _dtype(model_config.get("param_dtype", "float32"), "config.model.param_dtype")
  name = model_config.name
  if name == "custom_cnn":
    return CustomCNN(
        num_classes=num_classes,
        stage_widths=tuple(model_config.stage_widths),
        convs_per_stage=model_config.convs_per_stage,
        kernel_size=model_config.kernel_size,
        stem_stride=model_config.stem_stride,
        pooling=model_config.pooling,
        use_batchnorm=model_config.use_batchnorm,
        freeze_batchnorm=model_config.get("freeze_batchnorm", False),
        global_pool=model_config.global_pool,
        dense_widths=tuple(model_config.dense_widths),
        dropout_rate=model_config.dropout_rate,
        head_type=model_config.get("head_type", "linear"), aux_classes=aux_classes,
        dtype=dtype, param_dtype=param_dtype)
  if name == "efficientnet":
    from carjax.models.efficientnet import efficientnet  # pylint: disable=g-import-not-at-top
    overrides = dict(model_config.get("overrides", {}) or {})
    return efficientnet(model_config.variant, num_classes,
                        convention=model_config.get("convention", "tf"),
                        dtype=dtype, param_dtype=param_dtype,
                        freeze_batchnorm=model_config.get("freeze_batchnorm", False),
                        aux_classes=aux_classes, **overrides)
  raise ValueError(f"config.model.name must be 'custom_cnn' or 'efficientnet', got {name!r}")


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """What a model expects of its input: per-channel `mean` and `std` on the 0..255 scale, and
  the `dtype` it computes in."""

  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  dtype: Any = jnp.float32

  @classmethod
  def from_config(cls, model_config: ml_collections.ConfigDict) -> "InputSpec":
    return cls(tuple(model_config.input_mean), tuple(model_config.input_std),
               jnp.dtype(model_config.get("dtype", "float32")))

  def normalize(self, pixels):
    """(pixels - mean) / std per channel, in the compute dtype; pixels on the 0..255 scale."""
    mean = jnp.asarray(self.mean, jnp.float32)
    std = jnp.asarray(self.std, jnp.float32)
    return ((pixels.astype(jnp.float32) - mean) / std).astype(self.dtype)


def apply_pixels(model: nn.Module, variables, pixels, spec: InputSpec, *, train: bool,
                 **apply_kwargs):
  """`model.apply` on pixels (uint8, or float on the 0..255 scale) normalised by `spec`;
  `apply_kwargs` (rngs, mutable) go to `model.apply`."""
  return model.apply(variables, spec.normalize(pixels), train=train, **apply_kwargs)


def init_variables(model: nn.Module, input_hw: tuple[int, int], rng):
  """The model's freshly initialised variables for RGB input of `input_hw` = (height, width)
  (`carjax.data.decode.image_hw` of a config's size; pure: use under `jax.jit` or
  `jax.eval_shape`)."""
  height, width = input_hw
  # Flax creates a submodule's parameters only when init calls it: the auxiliary head too.
  aux = {"return_aux": True} if getattr(model, "aux_classes", 0) else {}
  return model.init(rng, jnp.zeros((1, height, width, 3), jnp.float32), train=False, **aux)


def without_aux_head(model: nn.Module, variables):
  """(model, variables) with the auxiliary head removed: what inference, evaluation and
  export use (they output the makes only). Unchanged for a model without one."""
  if not getattr(model, "aux_classes", 0):
    return model, variables
  params = {k: v for k, v in variables["params"].items() if k != "aux_head"}
  return model.clone(aux_classes=0), {**variables, "params": params}


# XLA:CPU options per architecture, measured model by model (RESULTS.md "Speed"). YNNPACK's
# convolution is a stencil copy plus a dot: for EfficientNet's 1×1 convolutions the copy costs
# more than the product, so its convolutions go to Eigen or become plain dots. The plain 3×3
# convolutions of the custom CNN are as fast in YNNPACK as in Eigen, so it keeps the default.
_CPU_COMPILER_OPTIONS = {
    "efficientnet": {"xla_cpu_experimental_ynn_fusion_type":
                     "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"},
    "custom_cnn": {},
}


def compiler_options(model_config: ml_collections.ConfigDict, backend: str) -> dict | None:
  """The `jax.jit(..., compiler_options=...)` for this model's steps on `backend` (or None).

  Only the CPU has per-model options; `CARJAX_XLA_CPU_OPTIONS=0` drops them (to measure).
  """
  if backend != "cpu" or os.environ.get("CARJAX_XLA_CPU_OPTIONS", "1") == "0":
    return None
  return dict(_CPU_COMPILER_OPTIONS.get(model_config.name, {})) or None

"""Everything a jitted training or evaluation step needs, built once from a config.

`build(config, num_classes, steps_per_epoch)` is the one place that reads the config for
training: the model and its input contract, the optimiser and its schedules, the mesh and
every sharding, the abstract state, and the jitted init, train and eval steps. The loop, the
benchmarks and the tests all take their steps from it. `initial_state` applies the resume
order: the newest checkpoint in the workdir (a stopped run resumes where it was), else
`config.init.resume_from` (another run's checkpoint), else pretrained weights named by
`config.model.pretrained` (the head re-initialised for our classes), else random weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from carjax import checkpoint as ckpt
from carjax import interrupts
from carjax import models
from carjax.data import augment
from carjax.data import decode
from carjax.errors import MissingPathError
from carjax.models import pretrained
from carjax.train import optim
from carjax.train import recovery
from carjax.train import sharding as sharding_lib
from carjax.train import state as state_lib
from carjax.train import steps as steps_lib
from carjax.train.state import TrainState


@dataclasses.dataclass
class TrainSetup:
  """A run's model, optimiser, mesh, shardings, abstract state and jitted steps."""

  model: nn.Module
  input_spec: models.InputSpec
  mesh: jax.sharding.Mesh
  data_sharding: jax.sharding.NamedSharding
  replicated: jax.sharding.NamedSharding
  tx: optax.GradientTransformation
  schedules: dict[str, Callable[[int], Any]]
  rngs: dict[str, jax.Array]
  abstract: Any  # The state's ShapeDtypeStructs, each with its sharding.
  state_sharding: Any
  init_state: Callable[[jax.Array], TrainState]  # Jitted: a fresh state laid over the mesh.
  train_step: Callable[..., Any]  # Jitted, donating the state.
  eval_step: Callable[..., Any]  # Jitted.


def abstract_variables(config: ml_collections.ConfigDict, num_classes: int,
                       aux_classes: int = 0) -> dict:
  """The shapes of the model's variables, without computing any (for checks before a run)."""
  model = models.build_model(config.model, num_classes, aux_classes)
  rng = state_lib.rngs_from_seed(config.seed)["init"]
  input_hw = decode.image_hw(config.data.image_size)
  return jax.eval_shape(lambda r: models.init_variables(model, input_hw, r), rng)


def build(config: ml_collections.ConfigDict, num_classes: int, steps_per_epoch: int, *,
          class_weights=None, mesh: jax.sharding.Mesh | None = None,
          aux_classes: int = 0) -> TrainSetup:
  """The set-up of `config` for `num_classes` (mesh: default `sharding.make_mesh(config)`);
  `aux_classes > 0` adds the auxiliary head and its loss (batches then carry 'aux_label')."""
  mesh = mesh or sharding_lib.make_mesh(config)
  sharding_lib.check_batch_sizes(config, mesh)
  rngs = state_lib.rngs_from_seed(config.seed)
  model = models.build_model(config.model, num_classes, aux_classes)
  size, train_cfg = decode.image_hw(config.data.image_size), config.train
  abstract_params = jax.eval_shape(lambda r: models.init_variables(model, size, r),
                                   rngs["init"])["params"]
  tx, schedules = optim.make_optimizer(train_cfg, steps_per_epoch, abstract_params)
  create = lambda r: state_lib.create_train_state(model, size, r, tx,
                                                  keep_ema=bool(train_cfg.ema_decay))
  abstract = jax.eval_shape(create, rngs["init"])
  state_sharding = sharding_lib.state_sharding(abstract, mesh, config)
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sharding)
  replicated = sharding_lib.replicated(mesh)
  xla_options = models.compiler_options(config.model, jax.default_backend())
  train_step, eval_step = make_steps(config, model, num_classes, class_weights=class_weights,
                                     micro_batch_sharding=sharding_lib.micro_batch_sharding(mesh),
                                     aux_classes=aux_classes)
  return TrainSetup(
      model=model, input_spec=models.InputSpec.from_config(config.model), mesh=mesh,
      data_sharding=sharding_lib.batch_sharding(mesh), replicated=replicated, tx=tx,
      schedules=schedules, rngs=rngs, abstract=abstract, state_sharding=state_sharding,
      init_state=jax.jit(create, out_shardings=state_sharding),
      train_step=jax.jit(train_step, donate_argnums=(0,),
                         out_shardings=(state_sharding, replicated),
                         compiler_options=xla_options),
      eval_step=jax.jit(eval_step, out_shardings=replicated, compiler_options=xla_options))


def distill_weight_of(train_cfg: ml_collections.ConfigDict) -> float:
  """The weight of the teacher's soft targets in the loss: 0 without a teacher."""
  return (float(train_cfg.get("distill_weight", 0.0)) if train_cfg.get("teacher_workdir")
          else 0.0)


def make_steps(config: ml_collections.ConfigDict, model: nn.Module, num_classes: int, *,
               input_spec: models.InputSpec | None = None, class_weights=None,
               micro_batch_sharding=None, aux_classes: int = 0):
  """(train_step, eval_step), not yet jitted, with every option read from `config` (the input
  normalisation from `config.model` unless `input_spec` is given; `aux_classes > 0`: `model`
  has an auxiliary head, trained with weight `config.train.aux_loss_weight`)."""
  train_cfg = config.train
  input_spec = input_spec or models.InputSpec.from_config(config.model)
  train_step = steps_lib.make_train_step(
      model=model, input_spec=input_spec,
      augment_spec=augment.AugmentSpec.from_config(config.data), num_classes=num_classes,
      label_smoothing=train_cfg.label_smoothing, ema_decay=train_cfg.ema_decay,
      frozen_pattern=train_cfg.frozen_params,
      accum_steps=int(train_cfg.get("grad_accum_steps", 1)), class_weights=class_weights,
      micro_batch_sharding=micro_batch_sharding, aux_classes=aux_classes,
      aux_loss_weight=float(train_cfg.get("aux_loss_weight", 0.0)),
      distill_weight=distill_weight_of(train_cfg),
      distill_temperature=float(train_cfg.get("distill_temperature", 1.0)),
      cosine_ce_weight=(float(train_cfg.cosine_ce_weight)
                        if train_cfg.get("loss", "cross_entropy") == "cosine" else None))
  eval_step = steps_lib.make_eval_step(model=model, input_spec=input_spec,
                                       num_classes=num_classes,
                                       use_ema=bool(train_cfg.ema_decay),
                                       flip_tta=bool(config.eval.get("flip_tta", False)))
  return train_step, eval_step


def initial_state(setup: TrainSetup, config: ml_collections.ConfigDict, workdir: str):
  """Applies the resume order; returns (state, meta of the restored checkpoint or {})."""
  restored = recovery.restore_newest_intact(workdir, setup.abstract)
  if restored is not None:
    state, meta = restored
    logging.info("Resuming from %s at step %d.", ckpt.checkpoint_dir(workdir, ckpt.LAST),
                 int(state.step))
    return state, meta
  if config.init.resume_from:
    source_dir = config.init.resume_from
    restored = ckpt.restore(ckpt.manager(source_dir, ckpt.LAST), setup.abstract)
    if restored is None:
      raise MissingPathError(
          f"config.init.resume_from={source_dir!r} holds no checkpoint under "
          f"{ckpt.checkpoint_dir(source_dir, ckpt.LAST)}")
    logging.info("Starting from the checkpoint of %s.", source_dir)
    # Its weights only: this run keeps its own best checkpoint and time.
    return restored[0], {}
  with interrupts.deferred("the initialisation"):
    state = setup.init_state(setup.rngs["init"])
  if config.model.pretrained:
    state = state_from_pretrained(state, setup.model, config)
  return state, {}


def state_from_pretrained(state: TrainState, model,
                          config: ml_collections.ConfigDict) -> TrainState:
  """`state` with every parameter and BatchNorm statistic from `config.model.pretrained`
  except the classifier head and the auxiliary head if any (re-initialised for our classes;
  zero with `config.init.zero_head`). Fails, naming them, on weights made for another
  model."""
  weights_dir = pretrained_weights_dir(config)
  variables, conventions = ckpt.load_converted(weights_dir)
  pretrained.check_conventions(conventions, config.model, model)
  merged = pretrained.merge_pretrained(
      {"params": state.params, "batch_stats": state.batch_stats}, variables,
      reinit=models.CLASSIFIER_HEADS)
  if config.init.zero_head:
    # Random logits of a fresh head over 1280 pretrained features are large (loss ~4 for
    # 20 classes instead of ln 20 = 3); starting at zero keeps early gradients from
    # scrambling the pretrained backbone (measured: 0.41 val accuracy after one epoch on
    # cars20 against 0.29 with the random head).
    for head in models.CLASSIFIER_HEADS:
      if head in merged["params"]:
        merged["params"][head] = jax.tree.map(jnp.zeros_like, merged["params"][head])
  # Each new leaf goes where its initialised counterpart lives (replicated over the mesh).
  placed = {k: jax.tree.map(lambda new, old: jax.device_put(new, old.sharding), merged[k], v)
            for k, v in (("params", state.params), ("batch_stats", state.batch_stats))}
  state = state.replace(**placed)
  if config.train.ema_decay:
    # Its own buffers: the train step donates the state, and XLA refuses one buffer donated
    # as two arguments (params and ema_params).
    state = state.replace(ema_params=jax.tree.map(lambda x: x.copy(), placed["params"]))
  logging.info("Initialised from pretrained weights %s (head re-initialised%s).",
               weights_dir, " at zero" if config.init.zero_head else "")
  return state


def pretrained_weights_dir(config: ml_collections.ConfigDict) -> str:
  """The absolute directory `config.model.pretrained` names ('' for none), converting known
  ImageNet weights into the cache on first use (`carjax.convert.weights_cache`). The config
  keeps the name as given, so a run's config.json stays the same on every machine."""
  if not config.model.get("pretrained"):
    return ""
  from carjax.convert import weights_cache  # pylint: disable=g-import-not-at-top
  return weights_cache.resolve(config.model.pretrained)

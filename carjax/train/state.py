"""The training state (parameters, optimiser state, BatchNorm statistics, optional EMA), how a
fresh one is made, and the run's random keys."""

from __future__ import annotations

from typing import Any

from flax.training import train_state
import jax

from carjax import models


class TrainState(train_state.TrainState):
  """`flax` TrainState plus BatchNorm running statistics and an optional weight EMA.

  `ema_params` is an empty dict when EMA is off, so the pytree structure (and with it the
  checkpoint layout) is fixed by the config alone.
  """

  batch_stats: Any = None
  ema_params: Any = None

  def eval_variables(self, use_ema: bool = True):
    """The variables to evaluate with: EMA weights when kept, else the raw ones."""
    params = self.ema_params if (use_ema and self.ema_params) else self.params
    return {"params": params, "batch_stats": self.batch_stats}


def rngs_from_seed(seed: int) -> dict[str, jax.Array]:
  """Independent keys by purpose, all derived from the one `config.seed`."""
  root = jax.random.key(seed)
  init, train = jax.random.split(root)
  return {"init": init, "train": train}


def create_train_state(model, input_hw: tuple[int, int], rng, tx, *,
                       keep_ema: bool) -> TrainState:
  """A freshly initialised state (pure: use under `jax.jit` or `jax.eval_shape`).

  `tx` is built once per run and shared, so every state of the run has the same static
  (non-array) fields, which jit's output shardings and checkpoint restores compare.
  `keep_ema` starts the weight average at the initial parameters (else it stays empty).
  """
  variables = models.init_variables(model, input_hw, rng)
  params = variables["params"]
  return TrainState.create(
      apply_fn=model.apply, params=params, tx=tx,
      batch_stats=variables.get("batch_stats", {}),
      ema_params=params if keep_ema else {})

"""The training state: parameters, optimiser state, BatchNorm statistics and optional EMA."""

from __future__ import annotations

from typing import Any

from flax.training import train_state


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

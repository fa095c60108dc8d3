"""carjax/checkpoint.py: a train state round-trips through orbax with its optimizer types."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from carjax import checkpoint as ckpt
from tests import helpers


def test_checkpoint_round_trip_keeps_optimizer_types(tmp_path):
  config = helpers.tiny_cnn_config("unused")
  _, state = helpers.initial_state(config)
  state = state.replace(step=jnp.asarray(5), params=jax.tree.map(lambda x: x + 1, state.params))
  mngr = ckpt.manager(str(tmp_path), ckpt.LAST)
  ckpt.save(mngr, 5, state, {"epoch": 1, "note": "x"})
  fresh = ckpt.manager(str(tmp_path), ckpt.LAST)
  restored, meta = ckpt.restore(fresh, ckpt.abstract_like(state))
  assert meta == {"epoch": 1, "note": "x"} and int(restored.step) == 5
  chex_equal = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), state, restored)
  assert all(jax.tree.leaves(chex_equal))
  adam_states = [s for s in jax.tree.leaves(
      restored.opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
                 if isinstance(s, optax.ScaleByAdamState)]
  assert len(adam_states) == 2  # One per parameter group (head, backbone).
  assert ckpt.restore(ckpt.manager(str(tmp_path / "empty"), ckpt.LAST),
                      ckpt.abstract_like(state)) is None

"""carjax/train/loop.py: an interrupted run resumes to the same result as one run straight."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from carjax import checkpoint as ckpt
from carjax.data import pipeline
from carjax.train import loop
from tests import helpers


def _final_params(workdir):
  from carjax.inference import restore_variables
  *_, variables, meta = restore_variables(str(workdir), ckpt.LAST)
  return variables, meta


def test_interrupted_run_resumes_to_the_same_result(tiny_folder, tmp_path, monkeypatch):
  config = helpers.tiny_cnn_config(tiny_folder)
  loop.train(config, str(tmp_path / "straight"))

  real_batches = pipeline.train_batches

  def interrupted(*args, **kwargs):
    for i, batch in enumerate(real_batches(*args, **kwargs)):
      if i == 7:  # Mid-epoch 2 (6 steps per epoch).
        raise KeyboardInterrupt
      yield batch

  monkeypatch.setattr(pipeline, "train_batches", interrupted)
  with pytest.raises(KeyboardInterrupt):
    loop.train(config, str(tmp_path / "stopped"))
  _, meta = _final_params(tmp_path / "stopped")
  assert meta["step"] == 7
  monkeypatch.setattr(pipeline, "train_batches", real_batches)
  loop.train(config, str(tmp_path / "stopped"))

  straight, meta_a = _final_params(tmp_path / "straight")
  resumed, meta_b = _final_params(tmp_path / "stopped")
  assert meta_a["step"] == meta_b["step"] == 12
  diffs = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), straight, resumed)
  assert max(jax.tree.leaves(diffs)) < 1e-5

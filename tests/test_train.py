"""Training: one batch overfits, checkpoints round-trip, a stopped run resumes exactly,
and the launchers run end to end on a tiny synthetic image folder on 2 CPU devices."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from carjax import models
from carjax.data import pipeline
from carjax import checkpoint as ckpt
from carjax.train import loop, optim, steps
from carjax.train import setup as setup_lib
from tests import helpers
from configs import custom_cnn
from tests.conftest import REPO_ROOT


def _tiny_config(source: str):
  config = custom_cnn.get_config("tiny")
  config.data.source = f"folder:{source}"
  return config


def _state(config, num_classes=3, per_epoch=10):
  setup, state = helpers.initial_state(config, num_classes, per_epoch)
  return setup.model, state


def test_overfits_one_batch():
  config = _tiny_config("unused")
  config.data.augment.crop_scale = (1.0, 1.0)
  config.data.augment.crop_ratio = (1.0, 1.0)
  config.data.augment.flip = False
  config.data.augment.color_jitter = 0.0
  config.model.dropout_rate = 0.0
  config.train.label_smoothing = 0.0
  config.train.warmup_epochs = 0.0
  config.train.weight_decay = 0.0
  config.train.num_epochs = 100
  config.train.learning_rate = 1e-2
  model, state = _state(config, num_classes=4, per_epoch=1)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (8, 32, 32, 3)).astype(np.uint8),
           "label": np.array([0, 1, 2, 3, 0, 1, 2, 3], np.int32)}
  step = jax.jit(helpers.plain_train_step(config, model, 4, (127.5,) * 3, (64.0,) * 3))
  losses = []
  for _ in range(60):
    state, m = step(state, batch, jax.random.key(0))
    losses.append(float(m["loss_sum"] / m["count"]))
  assert losses[0] > 1.0
  assert losses[-1] < 0.05
  assert int(m["correct"]) == 8


def test_cross_entropy_matches_definition_and_weights():
  logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
  labels = jnp.array([0, 2])
  mean, per_example = steps.cross_entropy(logits, labels, 3)
  expected = -jax.nn.log_softmax(logits)[jnp.arange(2), labels]
  np.testing.assert_allclose(per_example, expected, rtol=1e-6)
  weighted, _ = steps.cross_entropy(logits, labels, 3, example_weights=jnp.array([1.0, 3.0]))
  np.testing.assert_allclose(weighted, (expected[0] + 3 * expected[1]) / 4, rtol=1e-6)


def test_class_weights_balance_the_classes():
  weights = steps.class_weights_for(np.array([0, 0, 0, 1]), 3)
  np.testing.assert_allclose(weights, [4 / 9, 4 / 3, 0.0], rtol=1e-6)


def test_backbone_frozen_during_head_warmup():
  config = _tiny_config("unused")
  config.train.freeze_backbone_epochs = 1.0
  config.train.num_epochs = 3
  schedules = optim.make_schedules(config.train, steps_per_epoch=10)
  assert all(float(schedules["backbone"](s)) == 0.0 for s in range(11))
  assert float(schedules["backbone"](13)) > 0.0 and float(schedules["head"](3)) > 0.0


def test_checkpoint_round_trip_keeps_optimizer_types(tmp_path):
  config = _tiny_config("unused")
  model, state = _state(config)
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


def _final_params(workdir):
  from carjax.inference import restore_variables
  *_, variables, meta = restore_variables(str(workdir), ckpt.LAST)
  return variables, meta


def test_interrupted_run_resumes_to_the_same_result(tiny_folder, tmp_path, monkeypatch):
  config = _tiny_config(tiny_folder)
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


def _run(module, *args, devices=2):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))
  proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_launchers_end_to_end_on_two_devices(tiny_folder, tmp_path):
  workdir = tmp_path / "run"
  proc = _run("launch.train", "--config=configs/custom_cnn.py:tiny",
              f"--config.data.source=folder:{tiny_folder}", "--config.train.num_epochs=1",
              f"--workdir={workdir}")
  assert "mesh over 2 devices" in proc.stderr
  records = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  assert {r["split"] for r in records} == {"train", "val"}
  assert (workdir / "checkpoints" / "best").is_dir() and (workdir / "checkpoints" / "last").is_dir()
  summary = json.load(open(workdir / "eval_best_val" / "metrics.json"))
  assert summary["count"] == 12 and 0.0 <= summary["accuracy"] <= 1.0
  assert json.load(open(workdir / "class_names.json")) == ["Audi", "BMW", "Ford"]

  out = tmp_path / "eval_folder"
  _run("launch.evaluate", f"--workdir={workdir}", f"--folder={tiny_folder / 'val'}",
       f"--output={out}")
  folder_summary = json.load(open(out / "metrics.json"))
  assert folder_summary["count"] == 12
  assert folder_summary["accuracy"] == pytest.approx(summary["accuracy"])
  for name in ("per_class.csv", "confusion_matrix.csv", "confusion_matrix.png",
               "predictions.csv"):
    assert (out / name).stat().st_size > 0

  bad = tiny_folder / "val" / "Audi" / "broken.jpg"
  bad.write_bytes(b"not an image")
  proc = _run("launch.predict", f"--workdir={workdir}", f"--input={tiny_folder / 'val'}",
              "--format=json", "--top_k=2")
  payload = json.loads(proc.stdout)
  assert len(payload["predictions"]) == 12
  assert all(len(p["top_k"]) == 2 for p in payload["predictions"])
  assert sum(t["probability"] for t in payload["predictions"][0]["top_k"]) <= 1.0 + 1e-6
  assert payload["unreadable"][0]["file"].endswith("broken.jpg")
  assert "broken.jpg" in proc.stderr


def test_frozen_parameters_never_move_and_their_backward_is_dropped():
  config = _tiny_config("unused")
  config.train.frozen_params = r"^stage1/"
  model, state = _state(config, num_classes=3, per_epoch=2)
  step = jax.jit(helpers.plain_train_step(config, model, 3, (127.5,) * 3, (64.0,) * 3))
  batch = {"image": np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8),
           "label": np.array([0, 1, 2, 0], np.int32)}
  new_state, _ = step(jax.tree.map(jnp.copy, state), batch, jax.random.key(0))
  new_state, _ = step(new_state, batch, jax.random.key(0))  # Step 0's warm-up rate is 0.
  frozen_same = jax.tree.map(jnp.array_equal, state.params["stage1"], new_state.params["stage1"])
  assert all(jax.tree.leaves(frozen_same))
  assert not jnp.array_equal(state.params["stage2"]["conv0"]["kernel"],
                             new_state.params["stage2"]["conv0"]["kernel"])
  # No convolution gradient w.r.t. stage 1's kernels remains in the compiled step.
  hlo = step.lower(state, batch, jax.random.key(0)).compile().as_text()
  unfrozen_config = _tiny_config("unused")
  model2, state2 = _state(unfrozen_config, num_classes=3, per_epoch=2)
  step2 = jax.jit(helpers.plain_train_step(unfrozen_config, model2, 3, (127.5,) * 3,
                                               (64.0,) * 3))
  hlo2 = step2.lower(state2, batch, jax.random.key(0)).compile().as_text()
  assert hlo.count("convolution(") < hlo2.count("convolution(")



def test_state_from_pretrained_keeps_backbone_and_resets_head(tmp_path):
  from carjax import checkpoint
  from configs import efficientnet_lite0_finetune
  config = efficientnet_lite0_finetune.get_config()
  config.data.image_size = (32, 32)
  config.model.pretrained = str(tmp_path / "weights")
  imagenet_model = models.build_model(config.model, 1000)
  imagenet = imagenet_model.init(jax.random.key(7), jnp.zeros((1, 32, 32, 3)), train=False)
  # Non-trivial statistics, so a pretrained value cannot equal a fresh one by accident.
  imagenet = jax.tree.map(lambda a: np.asarray(a) + 0.25, imagenet)
  checkpoint.save_converted(config.model.pretrained, imagenet, dict(
      model="efficientnet", variant="lite0", num_classes=1000,
      padding=imagenet_model.padding, bn_epsilon=imagenet_model.bn_epsilon,
      activation=imagenet_model.activation, se=imagenet_model.se,
      input_mean=list(config.model.input_mean), input_std=list(config.model.input_std)))
  model, state = _state(config, num_classes=5)

  for zero_head in (True, False):
    config.init.zero_head = zero_head
    started = setup_lib.state_from_pretrained(state, model, config)
    for key in ("params", "batch_stats"):
      for path, leaf in jax.tree_util.tree_flatten_with_path(getattr(started, key))[0]:
        name = jax.tree_util.keystr(path)
        if key == "params" and "head" in name:
          continue
        source = imagenet[key]
        for p in path:
          source = source[p.key]
        np.testing.assert_array_equal(np.asarray(leaf), source, err_msg=name)
    head = started.params["head"]
    assert head["kernel"].shape == (1280, 5)
    if zero_head:
      assert not np.any(np.asarray(head["kernel"])) and not np.any(np.asarray(head["bias"]))
    else:
      np.testing.assert_array_equal(np.asarray(head["kernel"]),
                                    np.asarray(state.params["head"]["kernel"]))
      assert np.std(np.asarray(head["kernel"])) > 0.01

  config.model.input_std = (1.0, 1.0, 1.0)
  with pytest.raises(ValueError, match="input_std"):
    setup_lib.state_from_pretrained(state, model, config)

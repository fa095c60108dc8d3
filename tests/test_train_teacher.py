"""carjax.train.teacher and the distillation loss: a finished run teaching a student run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carjax import checkpoint as ckpt
from carjax import errors
from carjax.inference import Predictor
from carjax.study import recipes
from carjax.train import loop
from carjax.train import steps
from carjax.train import teacher
from configs import custom_cnn
from tests import helpers
from tests.conftest import write_synthetic_folder


def test_distillation_loss_gradient_is_t_times_the_softened_probability_gap():
  rng = np.random.default_rng(0)
  student, taught = (jnp.asarray(rng.normal(size=(5, 4)) * 3, jnp.float32) for _ in range(2))
  for t in (1.0, 2.0, 4.0):
    loss = steps.distillation_loss(student, taught, t)
    assert loss.shape == (5,) and bool(jnp.all(loss > 0))
    grad = jax.grad(lambda s: jnp.sum(steps.distillation_loss(s, taught, t)))(student)
    expected = t * (jax.nn.softmax(student / t) - jax.nn.softmax(taught / t))
    np.testing.assert_allclose(grad, expected, atol=1e-5)
  np.testing.assert_allclose(steps.distillation_loss(taught, taught, 2.0), 0.0, atol=1e-6)


@pytest.fixture(scope="module")
def taught_run(tmp_path_factory):
  """(data folder, a finished tiny teacher run)."""
  root = tmp_path_factory.mktemp("teacher")
  data = write_synthetic_folder(root / "cars", per_split=(("train", 12), ("val", 4)))
  config = custom_cnn.get_config("tiny")
  config.data.source = f"folder:{data}"
  config.train.num_epochs = 3
  loop.train(config, str(root / "teacher"))
  return data, root / "teacher"


def _student_config(data, teacher_dir, **train):
  config = custom_cnn.get_config("tiny")
  config.data.source = f"folder:{data}"
  config.train.teacher_workdir = str(teacher_dir)
  for name, value in train.items():
    config.train[name] = value
  return config


def test_the_teacher_classifies_the_training_photos_once_and_the_student_learns_them(
    taught_run, tmp_path):
  data, teacher_dir = taught_run
  config = _student_config(data, teacher_dir, num_epochs=1)
  student = tmp_path / "student"
  run = loop.train(config, str(student))
  saved = np.load(student / teacher.LOGITS_FILE)
  names = list(run.data.train.names)
  assert list(saved["names"]) == names and saved["logits"].shape == (36, 3)
  assert int(saved["teacher_step"]) == ckpt.read_meta(str(teacher_dir), ckpt.BEST)["step"]
  predictor = Predictor(str(teacher_dir))
  own = predictor.logits(np.stack([predictor.load_image(n) for n in names]))
  np.testing.assert_allclose(saved["logits"], own, rtol=1e-4, atol=1e-4)

  # A student taught only by soft targets (weight 1) that name the next make for every photo
  # learns that mapping, not the labels: the targets reach each photo's own loss, in order.
  shifted = np.roll(np.eye(3, dtype=np.float32) * 12.0, 1, axis=1)[run.data.train.labels]
  np.savez(tmp_path / "lying.npz", names=np.array(names), logits=shifted,
           teacher_step=saved["teacher_step"], teacher=saved["teacher"])
  liar = tmp_path / "liar"
  liar.mkdir()
  (tmp_path / "lying.npz").rename(liar / teacher.LOGITS_FILE)
  config = _student_config(data, teacher_dir, num_epochs=8, distill_weight=1.0,
                           distill_temperature=1.0, label_smoothing=0.0)
  config.data.augment.flip = False
  helpers.train_and_evaluate(config, str(liar))
  learned = Predictor(str(liar), ckpt.LAST)
  predicted = learned.logits(np.asarray(run.data.train.images)).argmax(-1)
  assert np.mean(predicted == (run.data.train.labels + 1) % 3) > 0.8
  assert recipes.recipe_row("student", config)[3].endswith(
      "not from scratch: distilled from teacher (weight 1, T 1)")


def test_a_teacher_of_other_photos_or_other_makes_is_refused(taught_run, tmp_path):
  data, teacher_dir = taught_run
  config = _student_config(data, teacher_dir)
  config.data.dev_fraction = 0.25
  with pytest.raises(errors.ConfigError, match="data.dev_fraction"):
    loop.train(config, str(tmp_path / "a"))
  other = write_synthetic_folder(tmp_path / "other", classes=("Audi", "BMW", "Kia"))
  config = _student_config(other, teacher_dir)
  with pytest.raises(errors.ConfigError, match="other makes"):
    loop.train(config, str(tmp_path / "b"))
  with pytest.raises(errors.ConfigError, match="no best checkpoint"):
    loop.train(_student_config(data, tmp_path), str(tmp_path / "c"))

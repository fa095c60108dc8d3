"""Export: the SavedModel (and TFLite model) built by `carjax.export.saved_model` classify like
carjax.

A tiny run is built directly (random but non-trivial weights and BatchNorm statistics saved
as its 'best' checkpoint), which is much quicker than training and exercises the same path.
"""

import io
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip(
    "tensorflow", reason='the export tests need the export extra: pip install -e ".[export]"')

from carjax.export import saved_model  # pylint: disable=g-import-not-at-top,wrong-import-position
from carjax import litert  # pylint: disable=g-import-not-at-top,wrong-import-position
from carjax import inference
from carjax.data import decode
from carjax import checkpoint as ckpt
from configs import custom_cnn
from tests import helpers
from tests.conftest import REPO_ROOT

CLASSES = ("Audi", "BMW", "Ford")
STEP = 7


def _softmax(logits):
  return np.asarray(jax.nn.softmax(logits, axis=-1))


def _perturb(tree, rng, scale):
  return jax.tree.map(lambda a: a + scale * rng.standard_normal(a.shape).astype(a.dtype), tree)


def write_tiny_run(workdir, image_size=(24, 40), flip_tta=True):
  """A workdir as training leaves it: config.json, class_names.json, checkpoints/best.

  Non-square and with flip test-time augmentation by default: the export must reproduce
  both (a square canvas without TTA is the special case of the same code)."""
  config = custom_cnn.get_config("tiny")
  config.data.source = "folder:unused"
  config.data.image_size = image_size
  config.eval.flip_tta = flip_tta
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  with open(os.path.join(workdir, "class_names.json"), "w") as f:
    json.dump(list(CLASSES), f)
  _, state = helpers.initial_state(config, len(CLASSES), 1)
  noise = np.random.default_rng(1)

  def stats(path, v):  # BatchNorm statistics away from their init (mean 0, var 1).
    v = np.asarray(v) + noise.normal(0, 0.5, np.shape(v))
    return (np.abs(v) + 0.5 if path[-1].key == "var" else v).astype(np.float32)
  batch_stats = jax.tree_util.tree_map_with_path(stats, jax.device_get(state.batch_stats))
  state = state.replace(params=_perturb(jax.device_get(state.params), noise, 0.1),
                        batch_stats=batch_stats)
  ckpt.save(ckpt.manager(workdir, ckpt.BEST), STEP, state,
            {"step": STEP, "epoch": 2, "class_names": list(CLASSES), "best_metric": "accuracy",
             "best_value": 0.5, "eval": {}})
  return workdir


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  root = tmp_path_factory.mktemp("export")
  workdir = write_tiny_run(str(root / "run"))
  predictor = inference.Predictor(workdir, ckpt.BEST)
  result = saved_model.export_model(workdir, str(root / "exported"), ckpt.BEST, tflite=True,
                               predictor=predictor)
  loaded = tf.saved_model.load(result.saved_model_dir)
  return predictor, result, loaded


def _carjax_probs(predictor, images):
  resized = np.stack([decode.resize_to(im, predictor.image_size, predictor.resize_mode)
                      for im in images])
  return _softmax(predictor.logits(resized))


def _tflite_runner(path, batch_shape):
  # LiteRT, the maintained runtime (not the deprecated tf.lite.Interpreter).
  pytest.importorskip("ai_edge_litert", reason='needs the export extra: pip install -e ".[export]"')
  return litert.signature_runner(path, batch_shape)


def test_saved_model_matches_predictor_at_model_size(exported):
  predictor, _, loaded = exported
  assert predictor.image_size == (24, 40) and predictor.flip_tta
  images = helpers.smooth_images(predictor.image_size, 6, seed=0)
  expected = _softmax(predictor.logits(images))
  out = loaded.signatures["serving_default"](images=tf.constant(images))
  probs = out["probabilities"].numpy()
  assert probs.shape == (6, len(CLASSES))
  np.testing.assert_allclose(probs, expected, atol=1e-4, rtol=0)
  assert expected.max(axis=1).min() < 0.99  # Non-trivial probabilities.
  np.testing.assert_array_equal(out["class_index"].numpy(), expected.argmax(axis=1))
  assert [n.decode() for n in out["class_name"].numpy()] == [
      CLASSES[i] for i in expected.argmax(axis=1)]
  # Another batch size through the same (batch-polymorphic) signature.
  one = loaded.signatures["serving_default"](images=tf.constant(images[:1]))
  np.testing.assert_allclose(one["probabilities"].numpy(), expected[:1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("shape", [(45, 61), (20, 27), (97, 40)])
def test_saved_model_agrees_on_other_sizes(exported, shape):
  predictor, _, loaded = exported
  images = helpers.smooth_images(shape, 4, seed=shape[0])
  expected = _carjax_probs(predictor, images)
  probs = loaded.signatures["serving_default"](images=tf.constant(images))[
      "probabilities"].numpy()
  assert np.abs(probs - expected).max() < 1e-2
  np.testing.assert_array_equal(probs.argmax(axis=1), expected.argmax(axis=1))


def test_bytes_signature_decodes_like_carjax(exported):
  predictor, _, loaded = exported
  blobs, arrays = [], []
  for i, (shape, fmt) in enumerate([((24, 40), "PNG"), ((45, 61), "PNG"), ((50, 30), "JPEG")]):
    image = helpers.smooth_images(shape, 1, seed=10 + i)[0]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, quality=95)
    blobs.append(buf.getvalue())
    arrays.append(predictor.load_image(buf.getvalue()))
  # Greyscale + alpha PNG: composited onto white as carjax.data.decode does.
  la = np.stack([helpers.smooth_images((40, 40), 1, seed=20)[0][..., 0],
                 np.linspace(0, 255, 1600).reshape(40, 40).astype(np.uint8)], axis=-1)
  buf = io.BytesIO()
  Image.fromarray(la, mode="LA").save(buf, format="PNG")
  blobs.append(buf.getvalue())
  arrays.append(predictor.load_image(buf.getvalue()))
  expected = _softmax(predictor.logits(np.stack(arrays)))
  out = loaded.signatures["predict_bytes"](image_bytes=tf.constant(blobs))
  probs = out["probabilities"].numpy()
  np.testing.assert_allclose(probs[:1], expected[:1], atol=1e-4, rtol=0)  # Lossless, at the model size.
  assert np.abs(probs - expected).max() < 1e-2
  np.testing.assert_array_equal(out["class_index"].numpy(), expected.argmax(axis=1))


def test_tflite_matches_predictor(exported):
  predictor, result, _ = exported
  assert result.tflite_bytes == os.path.getsize(result.tflite_path) > 0
  assert result.tflite_select_tf_ops is False  # Builtin ops only: any LiteRT runtime works.
  images = helpers.smooth_images(predictor.image_size, 3, seed=5)
  expected = _softmax(predictor.logits(images))
  out = _tflite_runner(result.tflite_path, images.shape)(images=images)
  np.testing.assert_allclose(out["probabilities"], expected, atol=1e-4, rtol=0)
  np.testing.assert_array_equal(out["class_index"], expected.argmax(axis=1))
  other = helpers.smooth_images((45, 61), 2, seed=6)
  expected = _carjax_probs(predictor, other)
  out = _tflite_runner(result.tflite_path, other.shape)(images=other)
  assert np.abs(out["probabilities"] - expected).max() < 1e-2


def test_class_names_and_conventions(exported):
  predictor, result, loaded = exported
  assert tuple(predictor.class_names) == CLASSES
  meta = loaded.signatures["metadata"]()
  assert tuple(n.decode() for n in meta["class_names"].numpy()) == CLASSES
  assert tuple(n.decode() for n in loaded.class_names.numpy()) == CLASSES
  assert tuple(saved_model.read_class_names(result.saved_model_dir)) == CLASSES
  with open(os.path.join(result.output_dir, saved_model.CLASS_NAMES_FILE)) as f:
    assert tuple(f.read().splitlines()) == CLASSES
  with open(os.path.join(result.output_dir, saved_model.CONVENTIONS_FILE)) as f:
    conventions = json.load(f)
  assert conventions == json.loads(meta["conventions"].numpy().decode())
  assert os.path.exists(
      os.path.join(result.saved_model_dir, "assets", saved_model.CONVENTIONS_FILE))
  assert conventions["image_size"] == list(predictor.image_size) == [24, 40]
  assert conventions["resize_mode"] == "squash"
  assert conventions["input_mean"] == pytest.approx(list(predictor.input_spec.mean))
  assert conventions["input_std"] == pytest.approx(list(predictor.input_spec.std))
  assert conventions["source"]["step"] == STEP and conventions["source"]["checkpoint"] == "best"
  assert conventions["class_names"] == list(CLASSES)


def test_export_refuses_to_overwrite(exported, tmp_path):
  predictor, result, _ = exported
  with pytest.raises(FileExistsError):
    saved_model.export_model("unused", result.output_dir, predictor=predictor)
  (tmp_path / "notes.txt").write_text("not an export")
  with pytest.raises(FileExistsError, match="refusing"):
    saved_model.export_model("unused", str(tmp_path), predictor=predictor, overwrite=True)
  assert (tmp_path / "notes.txt").exists()


@pytest.mark.slow
def test_launcher_exports_a_workdir(exported, tmp_path):
  predictor, result, _ = exported
  workdir = result.conventions["source"]["workdir"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))
  out = tmp_path / "cli"
  proc = subprocess.run(
      [sys.executable, "-m", "launch.export", f"--workdir={workdir}", f"--output={out}",
       "--platforms=cpu,cuda"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads(proc.stdout)
  assert summary["checkpoint_step"] == STEP and summary["tflite"] is None
  loaded = tf.saved_model.load(summary["saved_model"])
  images = helpers.smooth_images(predictor.image_size, 2, seed=7)
  np.testing.assert_allclose(
      loaded.signatures["serving_default"](images=tf.constant(images))["probabilities"].numpy(),
      _softmax(predictor.logits(images)), atol=1e-4, rtol=0)
  assert json.load(open(out / saved_model.CONVENTIONS_FILE))["serving_platforms"] == ["cpu", "cuda"]

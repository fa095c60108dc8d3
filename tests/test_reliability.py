"""Reliability (issue 12): no run lost, stuck, silently relabelled or trained on NaNs.

The kill/resume tests run real training subprocesses (the tiny CNN on a synthetic folder,
2 epochs of 6 steps) and stop them at named points with `CARJAX_FAULT` (carjax/faults.py):
SIGKILL, SIGINT and SIGTERM inside a step, an evaluation, and each checkpoint save. The same
command then resumes, and the result must be bitwise the uninterrupted run's. A persistent
XLA compilation cache shared by the subprocesses keeps each one to a few seconds.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from carjax import errors
from carjax import jsonio
from carjax.data import sources
from carjax import checkpoint as ckpt
from carjax.train import loop
from carjax.train import recovery
from carjax.train import validate
from carjax.train import rerun
from configs import custom_cnn
from tests.conftest import REPO_ROOT, write_synthetic_folder

# Periodic saves at steps 4 and 8, besides the epoch ends (6 and 12).
TRAIN_FLAGS = ("--config=configs/custom_cnn.py:tiny", "--config.checkpoint.every_steps=4",
               "--config.checkpoint.every_minutes=0")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  cache = tmp_path_factory.mktemp("xla_cache")
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT),
              JAX_COMPILATION_CACHE_DIR=str(cache),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
              XLA_FLAGS="--xla_force_host_platform_device_count=1")


@pytest.fixture(scope="module")
def cars(tmp_path_factory) -> pathlib.Path:
  return write_synthetic_folder(tmp_path_factory.mktemp("data") / "cars")


def launch(env, module, *args, fault: str | None = None, timeout=300):
  run_env = dict(env)
  run_env.pop("CARJAX_FAULT", None)
  if fault:
    run_env["CARJAX_FAULT"] = fault
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=run_env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module", autouse=True)
def sigint_not_ignored():
  """Children get SIGINT's default action, as under a terminal. A suite started in the
  background by a shell without job control (`cmd &`, `nohup`) ignores SIGINT; children would
  inherit that, and Python then installs no KeyboardInterrupt, so the Ctrl-C the tests inject
  would be ignored (as a run rightly does when its user ignores SIGINT). A handler in this
  process is not inherited: each child starts from the default and installs its own."""
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  yield
  signal.signal(signal.SIGINT, previous)


def train(env, cars, workdir, *extra, fault=None):
  return launch(env, "launch.train", *TRAIN_FLAGS, f"--config.data.source=folder:{cars}",
                f"--workdir={workdir}", *extra, fault=fault)


def error_lines(stderr: str, module: str) -> list[str]:
  return [l for l in stderr.splitlines() if l.startswith(f"{module}: error:")]


def final_result(workdir):
  """(last state arrays, best state arrays, best meta) of a finished workdir, all on host."""
  out = []
  for which in (ckpt.LAST, ckpt.BEST):
    mngr = ckpt.manager(str(workdir), which)
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    restored = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    out.append((jax.tree.map(np.asarray, restored["state"]), restored["meta"]))
  (last, last_meta), (best, best_meta) = out
  return last, last_meta, best, best_meta


def assert_bitwise_equal(a, b):
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def reference(env, cars, tmp_path_factory):
  """The uninterrupted run."""
  workdir = tmp_path_factory.mktemp("reference") / "run"
  proc = train(env, cars, workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


# ------------------------------------------------------------------------- interruptions

# Each entry: the fault of one attempt of the same command, its exit code, the checkpoint
# step `last` holds afterwards, and a line the attempt must log (what it found to repair).
CHAIN = (
    # Mid-epoch 1, after the periodic save at step 4.
    ("step_5:SIGKILL", -9, 4, "Data-parallel mesh"),
    # Inside epoch 1's evaluation.
    ("eval:SIGKILL", -9, 4, "Resuming from"),
    # Inside epoch 1's `last` save: every array written, the folder not yet renamed.
    ("save_last_finalize:SIGKILL", -9, 4, "Resuming from"),
    # Inside the `best` save that follows (epoch 1 is always best).
    ("save_best_finalize:SIGKILL", -9, 6, "Resuming from"),
    # SIGTERM mid-epoch 2: step 7 is saved, nothing lost.
    ("step_7:SIGTERM", 143, 7, "Completing the interrupted save of the best checkpoint"),
    # Ctrl-C inside the periodic save at step 8: the save completes first.
    ("save_last_begin:SIGINT", 130, 8, "SIGINT received: finishing"),
    # SIGTERM inside the final evaluation: step 12 is saved, marked unevaluated.
    ("eval:SIGTERM", 143, 12, "Interrupted at step 12"),
    # Abrupt death inside the final `last` save.
    ("save_last_finalize:exit", 3, 12, "whose end an interruption cut short"),
)


@pytest.mark.slow
def test_kills_at_every_point_resume_to_the_uninterrupted_result(env, cars, reference,
                                                                  tmp_path):
  workdir = tmp_path / "run"
  for fault, code, saved_step, logged in CHAIN:
    proc = train(env, cars, workdir, fault=fault)
    assert proc.returncode == code, (fault, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, (fault, proc.stderr[-3000:])
    assert logged in proc.stderr, (fault, logged, proc.stderr[-3000:])
    # What the next attempt resumes from (it first undoes a step replacement cut short).
    ckpt.recover_replaced(ckpt.manager(str(workdir), ckpt.LAST))
    assert ckpt.read_meta(str(workdir), ckpt.LAST)["step"] == saved_step, fault
  proc = train(env, cars, workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "whose end an interruption cut short" in proc.stderr

  last, last_meta, best, best_meta = final_result(workdir)
  ref_last, ref_last_meta, ref_best, ref_best_meta = final_result(reference)
  assert last_meta["step"] == ref_last_meta["step"] == 12
  assert_bitwise_equal(last, ref_last)
  assert_bitwise_equal(best, ref_best)
  for key in ("step", "best_step", "best_value", "eval"):
    if key == "eval":
      drop = lambda e: {k: v for k, v in e.items() if k != "seconds"}
      assert drop(best_meta[key]) == drop(ref_best_meta[key])
    else:
      assert best_meta[key] == ref_best_meta[key], key
  with open(workdir / "eval_best_val" / "metrics.json") as f, \
       open(reference / "eval_best_val" / "metrics.json") as g:
    mine, ref = json.load(f), json.load(g)
  assert {k: v for k, v in mine.items() if k != "train_seconds"} == \
      {k: v for k, v in ref.items() if k != "train_seconds"}


@pytest.mark.slow
def test_half_written_last_step_and_a_best_saved_first_resume(env, cars, reference, tmp_path):
  """The workdir of the issue's StepAlreadyExistsError: `best` holds the step that `last`'s
  interrupted save was writing (the pre-fix save order), plus orbax's temporary folder."""
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  # `last`'s only step replaced by orbax's temporary folder of a torn save of step 12.
  last_dir = pathlib.Path(ckpt.checkpoint_dir(str(workdir), ckpt.LAST))
  shutil.move(last_dir / "12", last_dir / "12.orbax-checkpoint-tmp-1234")
  # `last` holds nothing intact: the run falls back to `best` (with a warning) and goes on
  # from there, saving `best` again at a step that may already exist.
  proc = train(env, cars, workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "No intact 'last' checkpoint" in proc.stderr
  last, _, best, _ = final_result(workdir)
  ref_last, _, ref_best, _ = final_result(reference)
  assert_bitwise_equal(last, ref_last)
  assert_bitwise_equal(best, ref_best)


# ----------------------------------------------------------------------------- numerics


@pytest.mark.slow
def test_nan_loss_stops_the_run_naming_the_step(env, cars, tmp_path):
  workdir = tmp_path / "run"
  proc = train(env, cars, workdir, "--config.train.learning_rate=1e6",
               "--config.train.log_every_steps=3")
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  (line,) = error_lines(proc.stderr, "launch.train")
  assert "non-finite" in line and "training step" in line
  bad_step = int(line.split("training step ")[1].split(":")[0])
  # Stopped within the logging window of the bad step; nothing non-finite saved or logged.
  log = workdir / "metrics.jsonl"
  records = [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []
  assert all(r["step"] < bad_step for r in records)
  assert not os.path.isdir(os.path.join(ckpt.checkpoint_dir(str(workdir), ckpt.BEST)))  \
      or ckpt.manager(str(workdir), ckpt.BEST).latest_step() is None
  last = ckpt.read_meta(str(workdir), ckpt.LAST)
  assert last is None or last["step"] <= bad_step


def test_a_non_finite_epoch_never_becomes_best():
  assert not validate.metric_improves("accuracy", float("nan"), None)
  assert validate.metric_improves("accuracy", 0.1, None)
  assert validate.metric_improves("accuracy", 0.5, 0.4)
  assert not validate.metric_improves("accuracy", 0.4, 0.4)
  assert validate.metric_improves("loss", 0.3, 0.4)
  assert not validate.metric_improves("loss", float("inf"), 0.4)


def test_json_outputs_never_hold_nan():
  from carjax import prediction_output
  text = prediction_output.render([{"file": "a.jpg", "top_k": [("Audi", float("nan"))]}], [],
                                  "json")
  parsed = json.loads(text, parse_constant=lambda c: pytest.fail(f"invalid JSON token {c}"))
  assert parsed["predictions"][0]["top_k"][0]["probability"] is None
  assert jsonio.dumps({"x": np.float32("inf"), "y": [1.0, np.nan]}) == \
      '{"x": null, "y": [1.0, null]}'


def test_a_checkpoint_with_nan_weights_is_refused_by_predict(reference, tmp_path):
  from carjax.inference import Predictor
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  mngr = ckpt.manager(str(workdir), ckpt.BEST)
  abstract = _abstract_state(workdir)
  state, meta = ckpt.restore(mngr, abstract)
  state = state.replace(params=jax.tree.map(lambda p: p * np.nan, state.params))
  ckpt.save(mngr, int(state.step), state, meta)
  with pytest.raises(errors.NonFiniteError, match="NaN"):
    Predictor(str(workdir))


# --------------------------------------------------------------------------- checkpoints


def _abstract_state(workdir):
  """The abstract TrainState of the reference run (tiny CNN, 3 classes, 6 steps/epoch)."""
  from carjax.train import setup as setup_lib
  return setup_lib.build(custom_cnn.get_config("tiny"), 3, 6).abstract


def _largest_file(folder: pathlib.Path) -> pathlib.Path:
  return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_flipped_bytes_are_detected_and_the_run_falls_back(reference, tmp_path, caplog):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  abstract = _abstract_state(workdir)
  target = _largest_file(pathlib.Path(ckpt.checkpoint_dir(str(workdir), ckpt.LAST)) / "12"
                         / "state")
  data = bytearray(target.read_bytes())
  for i in range(len(data) // 2, len(data) // 2 + 16):
    data[i] ^= 0xFF
  target.write_bytes(bytes(data))
  with pytest.raises(ckpt.DamagedCheckpointError, match="last/12"):
    ckpt.restore(ckpt.manager(str(workdir), ckpt.LAST), abstract)
  state, meta = recovery.restore_newest_intact(str(workdir), abstract)
  assert meta["step"] == ckpt.read_meta(str(workdir), ckpt.BEST)["step"]
  assert "falling back" in caplog.text and "No intact 'last'" in caplog.text
  damaged = list((workdir / "checkpoints" / "damaged").iterdir())
  assert [d.name.split("-")[:2] for d in damaged] == [["last", "12"]]  # Moved, not deleted.


def test_silently_changed_arrays_fail_their_checksum(reference, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  abstract = _abstract_state(workdir)
  mngr = ckpt.manager(str(workdir), ckpt.LAST)
  state, meta = ckpt.restore(mngr, abstract)
  # Write different arrays under the old checksums: what a silent bit flip looks like.
  meta_file = pathlib.Path(mngr.directory) / "12" / "meta" / "metadata"
  stored = json.loads(meta_file.read_text())["checksums"]
  changed = state.replace(params=jax.tree.map(lambda p: p + 1e-3, state.params))
  ckpt.save(mngr, 12, changed, meta)
  record = json.loads(meta_file.read_text())
  record["checksums"]["params"] = stored["params"]
  meta_file.write_text(json.dumps(record))
  with pytest.raises(ckpt.DamagedCheckpointError, match="params differ"):
    ckpt.restore(ckpt.manager(str(workdir), ckpt.LAST), abstract)


def test_a_deleted_last_step_resumes_from_best_not_from_scratch(reference, tmp_path, caplog):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  shutil.rmtree(pathlib.Path(ckpt.checkpoint_dir(str(workdir), ckpt.LAST)) / "12")
  state, meta = recovery.restore_newest_intact(str(workdir), _abstract_state(workdir))
  assert int(state.step) == meta["step"] > 0
  assert "resuming from the 'best' one" in caplog.text


def test_a_damaged_best_is_forgotten_with_a_warning(reference, tmp_path, caplog):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  abstract = _abstract_state(workdir)
  state, meta = ckpt.restore(ckpt.manager(str(workdir), ckpt.LAST), abstract)
  best_dir = pathlib.Path(ckpt.checkpoint_dir(str(workdir), ckpt.BEST))
  target = _largest_file(next(best_dir.iterdir()) / "state")
  target.write_bytes(b"\0" * target.stat().st_size)
  assert recovery.reconcile_best(str(workdir), state, meta, abstract) == (None, None)
  assert "the next evaluated epoch becomes best" in caplog.text


def test_saving_an_existing_step_replaces_it(reference, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  abstract = _abstract_state(workdir)
  mngr = ckpt.manager(str(workdir), ckpt.BEST)
  state, meta = ckpt.restore(mngr, abstract)
  step = int(state.step)
  changed = state.replace(params=jax.tree.map(lambda p: p * 2, state.params))
  ckpt.save(mngr, step, changed, dict(meta, note="again"))  # No StepAlreadyExistsError.
  restored, meta2 = ckpt.restore(ckpt.manager(str(workdir), ckpt.BEST), abstract)
  assert meta2["note"] == "again"
  assert_bitwise_equal(jax.tree.map(np.asarray, restored.params),
                       jax.tree.map(np.asarray, changed.params))


# ------------------------------------------------------------------------------ workdirs


def test_a_second_run_on_a_workdir_stops_at_once(env, cars, tmp_path):
  workdir = tmp_path / "run"
  with rerun.WorkdirLock(str(workdir)):
    proc = train(env, cars, workdir)
  assert proc.returncode == 2
  (line,) = error_lines(proc.stderr, "launch.train")
  assert str(workdir) in line and f"pid {os.getpid()}" in line
  assert not (workdir / "config.json").exists()


def test_the_lock_of_a_killed_run_is_free(tmp_path):
  workdir = tmp_path / "run"
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from carjax.train import rerun as w; "
       f"lock = w.WorkdirLock({str(workdir)!r}).__enter__(); print('held', flush=True); "
       "time.sleep(60)"], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "held"
  with pytest.raises(errors.WorkdirLockedError, match=f"pid {holder.pid}"):
    rerun.WorkdirLock(str(workdir)).__enter__()
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  with rerun.WorkdirLock(str(workdir)):  # Taken over at once.
    assert f"pid {os.getpid()}" in (workdir / rerun.LOCK_FILE).read_text()


def _workdir_files(workdir):
  return {p: p.read_bytes() for p in pathlib.Path(workdir).rglob("*")
          if p.is_file() and p.name != rerun.LOCK_FILE}


@pytest.mark.parametrize("change, expected", [
    ("rename_class", "classes"),
    ("add_class", "added ['Zastava']"),
    ("architecture", "config.model.dense_widths"),
    ("learning_rate", "config.train.learning_rate"),
    ("option_the_run_predates", "config.train.layer_lr_decay: 1.0 -> 0.9"),
])
def test_a_mismatched_rerun_is_refused_before_writing(reference, cars, tmp_path, change,
                                                      expected):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  if change == "option_the_run_predates":  # Its config.json as written before the option.
    recorded = json.loads((workdir / "config.json").read_text())
    del recorded["train"]["layer_lr_decay"]
    (workdir / "config.json").write_text(json.dumps(recorded))
  before = _workdir_files(workdir)
  data = tmp_path / "cars"
  shutil.copytree(cars, data)
  config = custom_cnn.get_config("tiny")
  config.data.source = f"folder:{data}"
  config.checkpoint.every_steps = 4
  config.checkpoint.every_minutes = 0
  if change == "rename_class":
    for split in ("train", "val"):
      (data / split / "Audi").rename(data / split / "Alfa")
  elif change == "add_class":
    for split in ("train", "val"):
      shutil.copytree(data / split / "Ford", data / split / "Zastava")
  elif change == "architecture":
    config.model.dense_widths = (24,)
  elif change == "option_the_run_predates":
    config.train.layer_lr_decay = 0.9
  else:
    config.train.learning_rate = 5e-4
  with pytest.raises(errors.WorkdirMismatchError, match=expected.replace("[", r"\[")):
    loop.train(config, str(workdir))
  assert _workdir_files(workdir) == before


def test_a_run_that_predates_an_option_resumes_at_the_option_s_default():
  now = rerun.flat_config(custom_cnn.get_config("tiny"))
  saved = {k: v for k, v in now.items() if k != "train.layer_lr_decay"}
  assert rerun.changed_fields(rerun.recorded_config(saved, now), now) == []
  unknown = {k: v for k, v in now.items() if k != "train.learning_rate"}  # Not an added option.
  assert rerun.changed_fields(rerun.recorded_config(unknown, now), now) == ["train.learning_rate"]


def test_a_rerun_may_change_the_length():
  config = custom_cnn.get_config("tiny")
  stored = rerun.flat_config(config)
  config.train.num_epochs = 5
  changed = [k for k, v in rerun.flat_config(config).items() if stored[k] != v]
  assert changed == ["train.num_epochs"]
  assert set(changed) <= rerun.RESUMABLE_CHANGES


# ---------------------------------------------------------------------- config and data


@pytest.mark.parametrize("option, value", [
    ("eval.best_metric", "acurracy"), ("eval.batch_size", 0), ("eval.every_epochs", 0),
    ("train.batch_size", 0), ("train.label_smoothing", 2.0), ("train.learning_rate", 0.0),
    ("train.learning_rate", float("nan")), ("train.optimizer", "adam"),
    ("train.num_epochs", 0), ("train.ema_decay", 1.0), ("train.log_every_steps", 0),
    ("train.frozen_params", "(unclosed"), ("data.resize_mode", "stretch"),
    ("data.image_size", (0, 0)), ("data.val_fraction", 1.5), ("data.train_split", ""),
    ("data.augment.crop_scale", (0.0, 1.0)), ("model.dtype", "float8"),
    ("model.name", "resnet"), ("checkpoint.every_steps", -1),
    ("init.resume_from", "/nonexistent/run"), ("train.grad_accum_steps", 0),
    ("mesh.fsdp", 0), ("train.aux_loss_weight", -0.5),
    ("data.aux_labels_csv", "/nonexistent/MANIFEST.csv"), ("train.layer_lr_decay", 0.0),
    ("train.layer_lr_decay", 1.2), ("eval.image_size", (4, 4)), ("eval.image_size", (10, 20, 30)),
    ("train.teacher_workdir", "/nonexistent/run"), ("train.distill_weight", 1.5),
    ("train.distill_temperature", 0.0), ("train.loss", "cosin"),
    ("train.cosine_ce_weight", -0.1), ("model.head_type", "arcface"),
    ("data.augment.mixup_prob", 1.5), ("data.augment.mixup_alpha", 0.0),
])
def test_every_config_value_is_checked_before_data_is_read(option, value, tmp_path):
  config = custom_cnn.get_config("tiny")
  config.data.source = f"folder:{tmp_path / 'no_such_folder'}"  # Never opened.
  section, _, field = option.rpartition(".")
  node = config
  for part in section.split("."):
    node = node[part]
  node[field] = value
  with pytest.raises(errors.ConfigError, match=f"config.{option}"):
    loop.train(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_cutmix_and_mixup_together_are_refused_naming_both_options(tmp_path):
  config = custom_cnn.get_config("tiny")
  config.data.source = f"folder:{tmp_path / 'no_such_folder'}"
  config.data.augment.cutmix_prob = 0.5
  config.data.augment.mixup_prob = 1.0
  with pytest.raises(errors.ConfigError,
                     match="config.data.augment.cutmix_prob and config.data.augment.mixup_prob"):
    loop.train(config, str(tmp_path / "run"))


def test_a_split_typo_fails_before_decoding(cars, tmp_path):
  config = custom_cnn.get_config("tiny")
  config.data.source = f"folder:{cars}"
  config.data.eval_split = "vall"
  with pytest.raises(errors.ConfigError, match="config.data.eval_split.*Unknown split 'vall'"):
    loop.train(config, str(tmp_path / "run"))


def test_one_class_and_empty_splits_are_refused_before_training(tmp_path):
  one = write_synthetic_folder(tmp_path / "one", classes=("Audi",))
  config = custom_cnn.get_config("tiny")
  config.data.source = f"folder:{one}"
  with pytest.raises(errors.DataError, match="at least two"):
    loop.train(config, str(tmp_path / "run1"))
  empty_val = write_synthetic_folder(tmp_path / "two", per_split=(("train", 8), ("val", 0)))
  config.data.source = f"folder:{empty_val}"
  with pytest.raises(errors.DataError, match="eval split 'val'.* is empty"):
    loop.train(config, str(tmp_path / "run2"))
  assert not (tmp_path / "run2" / "config.json").exists()


def test_symlinks_never_leave_the_class_folder_nor_repeat_files(tmp_path, caplog):
  root = write_synthetic_folder(tmp_path / "cars", per_split=(("train", 3), ("val", 1)))
  outside = write_synthetic_folder(tmp_path / "elsewhere", classes=("Audi",),
                                   per_split=(("x", 2),))
  audi = root / "train" / "Audi"
  (audi / "sub").mkdir()
  os.symlink(next(audi.glob("*.jpg")), audi / "sub" / "same_photo.jpg")
  os.symlink(".", audi / "loop")
  os.symlink("..", audi / "up")
  os.symlink(audi / "sub", audi / "again")
  os.symlink(outside / "x" / "Audi", audi / "outside")
  os.symlink(root / "train" / "BMW" / next((root / "train" / "BMW").glob("*.jpg")).name,
             audi / "a_bmw.jpg")
  with pytest.raises(errors.DataError, match="through a symbolic link"):
    sources.ImageFolderSource(root)  # a_bmw.jpg: one file under two classes.
  os.remove(audi / "a_bmw.jpg")
  source = sources.ImageFolderSource(root)
  train = source.records("train")
  assert len(train) == 9  # 3 per class: no repeats, no BMW or outside photo labelled Audi.
  assert sorted(os.path.basename(r.path) for r in train if r.label == 0) == sorted(
      p.name for p in audi.glob("*.jpg"))
  skipped = " ".join(source.skipped_links)
  for link in ("loop", "up", "again", "outside", "same_photo.jpg"):
    assert link in skipped, link
  assert "skipped 5 symbolic links" in caplog.text


def test_evaluate_folder_refuses_training_images(reference, cars):
  from carjax import evaluation
  with pytest.raises(errors.DataError, match="holds a training split"):
    evaluation.evaluate_workdir(str(reference), folder=str(cars))
  with pytest.raises(errors.DataError, match="images of the run's training split"):
    evaluation.evaluate_workdir(str(reference), folder=str(cars / "train"))


# ----------------------------------------------------------------------------- launchers


@pytest.mark.slow
def test_launchers_turn_user_errors_into_one_line_and_exit_code_2(env, reference, tmp_path):
  cases = [
      ("launch.train", ("--config=configs/custom_cnn.py:tiny", "--config.data.source=folder:/x",
                        "--config.eval.best_metric=acurracy", f"--workdir={tmp_path}/a"),
       "config.eval.best_metric"),
      ("launch.train", ("--config=configs/custom_cnn.py:tiny", "--config.train.nope=1",
                        f"--workdir={tmp_path}/b"), "nope"),
      ("launch.predict", (f"--workdir={reference}", "--input=x.jpg", "--top_k=0"), "top_k"),
      ("launch.evaluate", (f"--workdir={reference}", f"--folder={tmp_path}/nothing"),
       "does not exist"),
  ]
  for module, args, expected in cases:
    proc = launch(env, module, *args)
    assert proc.returncode == 2, (module, args, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = error_lines(proc.stderr, module)
    assert len(lines) == 1 and expected in lines[0], (expected, proc.stderr[-2000:])


def test_unexpected_errors_keep_their_traceback(env):
  code = ("from carjax import cli\n"
          "def main(argv):\n  raise RuntimeError('a bug')\n"
          "cli.run(main)\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1
  assert "Traceback" in proc.stderr and "RuntimeError: a bug" in proc.stderr


def test_a_non_finite_gradient_stops_the_window_naming_its_step():
  window = loop._Window("runs/x")  # pylint: disable=protected-access
  finite = {"loss_sum": 4.0, "correct": 1, "count": 4, "grad_norm": 2.0}
  window.add(10, finite)
  window.add(11, dict(finite, grad_norm=np.inf))
  window.add(12, dict(finite, loss_sum=np.nan, grad_norm=np.nan))
  with pytest.raises(errors.NonFiniteError, match="non-finite gradient at training step 12: "
                     r".*checkpoint at step 8 is intact.*resume_from=runs/x"):
    window.flush(saved_step=8)


def test_checkpoints_are_due_by_steps_and_by_minutes(monkeypatch):
  run = loop._EpochLoop.__new__(loop._EpochLoop)  # pylint: disable=protected-access
  run.every_steps, run.every_seconds, run.last_save_time = 4, 0.0, 0.0
  assert [s for s in range(1, 13) if run.periodic_save_due(s)] == [4, 8, 12]
  clock = [599.0]
  monkeypatch.setattr(loop.time, "monotonic", lambda: clock[0])
  run.every_steps, run.every_seconds, run.last_save_time = 0, 600.0, 0.0
  assert not run.periodic_save_due(3)
  clock[0] = 600.0  # Ten minutes after the last save.
  assert run.periodic_save_due(3)
  run.every_seconds = 0.0  # Off.
  assert not run.periodic_save_due(3)

"""Scale-out: the same run on 1 device, 8 fake devices (data parallel and FSDP), and two real
processes on this machine gives the same parameters and BatchNorm statistics; a checkpoint
saved on 8 devices resumes on 1 and on 2.

Fake devices (`--xla_force_host_platform_device_count`) must be set before JAX starts, so
every run here is a subprocess of `launch.train`. Tolerance: the runs differ only in the
order of floating-point sums (a mean over the batch is a sum of per-device partial sums), so
after 6 AdamW steps the parameters agree to 1e-5 (absolute, parameters of order 0.1-1).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from carjax import checkpoint as ckpt
from carjax.train import sharding as sharding_lib
from tests.conftest import REPO_ROOT, write_synthetic_folder

TOLERANCE = 1e-5
STEPS = 6  # 24 training images, batch 8: 3 steps per epoch, 2 epochs.


def _env(devices: int) -> dict[str, str]:
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))


def _train_command(folder, workdir, *extra, stop_after_steps=None):
  entry = (["-m", "launch.train"] if stop_after_steps is None else
           [str(REPO_ROOT / "tests" / "train_worker.py"), f"--stop_after_steps={stop_after_steps}"])
  return [sys.executable, *entry, "--config=configs/custom_cnn.py:tiny",
          f"--config.data.source=folder:{folder}", "--config.train.batch_size=8",
          "--config.eval.batch_size=8", f"--workdir={workdir}", *extra]


def _train(folder, workdir, devices, *extra, stop_after_steps=None):
  proc = subprocess.run(_train_command(folder, workdir, *extra,
                                       stop_after_steps=stop_after_steps),
                        cwd=REPO_ROOT, env=_env(devices), capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def _variables(workdir, which=ckpt.LAST):
  from carjax.inference import restore_variables
  *_, variables, meta = restore_variables(str(workdir), which)
  return jax.device_get(variables), meta


def _max_difference(a, b) -> float:
  assert jax.tree.structure(a) == jax.tree.structure(b)
  return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), a, b)))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return write_synthetic_folder(tmp_path_factory.mktemp("data") / "cars")


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory):
  """The uninterrupted single-device run everything else must reproduce."""
  workdir = tmp_path_factory.mktemp("one_device") / "run"
  proc = _train(folder, workdir, 1)
  assert "mesh over 1 devices" in proc.stderr
  variables, meta = _variables(workdir)
  assert meta["step"] == STEPS
  return workdir, variables


@pytest.mark.slow
def test_eight_devices_match_one_device(folder, reference, tmp_path):
  _, expected = reference
  proc = _train(folder, tmp_path / "run", 8)
  assert "mesh over 8 devices (data=8, fsdp=1)" in proc.stderr
  variables, meta = _variables(tmp_path / "run")
  assert meta["step"] == STEPS
  # The BatchNorm statistics are those of the global batch: per-device statistics would
  # differ from the single-device run by far more than the tolerance.
  assert _max_difference(variables["batch_stats"], expected["batch_stats"]) < TOLERANCE
  assert _max_difference(variables["params"], expected["params"]) < TOLERANCE
  assert _max_difference(variables["params"],
                         jax.tree.map(np.zeros_like, expected["params"])) > 0.1


@pytest.mark.slow
def test_fsdp_checkpoint_saved_on_8_devices_resumes_on_1_and_on_2(folder, reference,
                                                                   tmp_path):
  _, expected = reference
  fsdp = ("--config.mesh.fsdp=2", "--config.mesh.fsdp_min_size=0")
  stopped = tmp_path / "stopped_on_8"
  proc = _train(folder, stopped, 8, *fsdp, stop_after_steps=4)
  assert "mesh over 8 devices (data=4, fsdp=2)" in proc.stderr
  assert "stopped as asked" in proc.stdout
  assert _variables(stopped)[1]["step"] == 4
  for devices, extra in ((1, ()), (2, fsdp)):
    resumed = tmp_path / f"resumed_on_{devices}"
    shutil.copytree(stopped, resumed)
    proc = _train(folder, resumed, devices, *extra)
    assert "Resuming from" in proc.stderr and "at step 4" in proc.stderr
    variables, meta = _variables(resumed)
    assert meta["step"] == STEPS
    assert _max_difference(variables["params"], expected["params"]) < TOLERANCE, devices
    assert _max_difference(variables["batch_stats"], expected["batch_stats"]) < TOLERANCE


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process_and_their_checkpoint_restores_in_one(
    folder, reference, tmp_path):
  reference_dir, expected = reference
  workdir = tmp_path / "two_processes"
  address = f"localhost:{_free_port()}"
  procs = [subprocess.Popen(
      _train_command(folder, workdir, f"--coordinator_address={address}",
                     "--num_processes=2", f"--process_id={i}"),
      cwd=REPO_ROOT, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-4000:]
  assert "mesh over 4 devices (data=4, fsdp=1) in 2 process(es)" in outputs[0][1]

  # The checkpoint the two processes wrote together restores in this single process.
  variables, meta = _variables(workdir)
  assert meta["step"] == STEPS
  assert _max_difference(variables["params"], expected["params"]) < TOLERANCE
  assert _max_difference(variables["batch_stats"], expected["batch_stats"]) < TOLERANCE
  # ... as the whole train state too (optimiser state included), onto this one device.
  abstract = _abstract_state(workdir)
  state, _ = ckpt.restore(ckpt.manager(str(workdir), ckpt.LAST), abstract)
  assert int(state.step) == STEPS and jax.tree.structure(state) == jax.tree.structure(abstract)

  # The primary alone wrote the run's files: metrics once per step, every image evaluated once.
  records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, STEPS + 1))
  summary = json.load(open(workdir / "eval_best_val" / "metrics.json"))
  single = json.load(open(reference_dir / "eval_best_val" / "metrics.json"))
  assert summary["count"] == single["count"] == 12
  assert summary["accuracy"] == pytest.approx(single["accuracy"])
  predictions = lambda d: [(r["file"], r["predicted"]) for r in
                           csv.DictReader(open(d / "eval_best_val" / "predictions.csv"))]
  assert predictions(workdir) == predictions(reference_dir)


def _abstract_state(workdir):
  """The run's train state as ShapeDtypeStructs with this process's (one-device) shardings."""
  from carjax.train import setup as setup_lib
  from carjax.workdir import load_run_config
  return setup_lib.build(load_run_config(str(workdir)), 3, 3).abstract


def test_fsdp_splits_the_largest_divisible_dimension():
  spec = sharding_lib.fsdp_spec
  assert spec((3, 3, 64, 128), 4, 0) == jax.sharding.PartitionSpec(None, None, None, "fsdp")
  assert spec((3, 3, 64, 6), 4, 0) == jax.sharding.PartitionSpec(None, None, "fsdp", None)
  assert spec((3, 5), 4, 0) == jax.sharding.PartitionSpec()  # Nothing divisible: replicated.
  assert spec((1024,), 4, 2 ** 14) == jax.sharding.PartitionSpec()  # Too small to split.
  assert spec((1024, 64), 1, 0) == jax.sharding.PartitionSpec()  # No fsdp axis.


_FSDP_LAYOUT_SCRIPT = """
import jax, numpy as np
from configs import custom_cnn
from carjax.train import sharding
from tests import helpers
config = custom_cnn.get_config("tiny").unlock()
config.mesh.fsdp, config.mesh.fsdp_min_size = 4, 1000
config.train.batch_size = 16  # The batch below, split over the 8 devices.
config.eval.batch_size = 16  # Evaluation batches are split over the devices too.
mesh = sharding.make_mesh(config)
setup, state = helpers.initial_state(config, 3, 3, mesh=mesh)
model, shardings = setup.model, setup.state_sharding
kernel = state.params["stage2"]["conv0"]["kernel"]  # 3x3x8x16 = 1152 elements.
mu = [s for s in jax.tree.leaves(state.opt_state) if s.shape == kernel.shape][0]
bias = state.params["head"]["bias"]
print("kernel", kernel.shape, kernel.addressable_shards[0].data.shape)
print("adam", mu.addressable_shards[0].data.shape)
print("bias", bias.shape, bias.addressable_shards[0].data.shape)

# Gradient accumulation on this mesh (micro-batches split over all 8 devices, parameters
# FSDP-split) computes the same step as on one device.
config.train.grad_accum_steps = 2
make = lambda s: helpers.plain_train_step(config, model, 3, (127.5,) * 3, (64.0,) * 3,
                                          micro_batch_sharding=s)
rng = np.random.default_rng(0)
batch = {"image": rng.integers(0, 256, (16, 32, 32, 3)).astype(np.uint8),
         "label": (np.arange(16) % 3).astype(np.int32)}
one_device = jax.jit(make(None))(jax.device_put(state, jax.devices()[0]), batch, jax.random.key(1))
data = sharding.batch_sharding(mesh)
on_mesh = jax.jit(make(sharding.micro_batch_sharding(mesh)), out_shardings=(shardings, None))(
    state, sharding.global_batch(batch, data, 16), jax.random.key(1))
diff = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))),
                                        jax.device_get(one_device[0]), jax.device_get(on_mesh[0]))))
print("accumulated step difference", "small" if diff < 1e-5 else diff)
"""


def test_fsdp_shards_parameters_and_optimizer_state():
  proc = subprocess.run([sys.executable, "-c", _FSDP_LAYOUT_SCRIPT], cwd=REPO_ROOT,
                        env=_env(8), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  assert "kernel (3, 3, 8, 16) (3, 3, 8, 4)" in lines  # A quarter on each device.
  assert "adam (3, 3, 8, 4)" in lines  # Adam's moments split like their parameter.
  assert "bias (3,) (3,)" in lines  # Small: replicated.
  assert "accumulated step difference small" in lines, proc.stdout


def test_batch_that_does_not_split_over_the_devices_is_explained():
  from configs import custom_cnn
  config = custom_cnn.get_config("tiny").unlock()
  config.train.batch_size, config.train.grad_accum_steps = 6, 4
  mesh = sharding_lib.make_mesh(config)
  with pytest.raises(ValueError, match="grad_accum_steps=4"):
    sharding_lib.check_batch_sizes(config, mesh)
  config.mesh.fsdp = 3
  with pytest.raises(ValueError, match="config.mesh.fsdp=3"):
    sharding_lib.make_mesh(config)


def test_processes_reading_their_rows_see_the_global_batch_between_them():
  from carjax.data import pipeline
  images = np.arange(20)[:, None, None, None].repeat(2, 1).astype(np.uint8)
  labels = np.arange(20, dtype=np.int32)
  whole = pipeline.train_batches(images, labels, 8, seed=3, start_step=5)
  halves = [pipeline.train_batches(images, labels, 8, seed=3, start_step=5, rows=rows)
            for rows in (np.arange(0, 4), np.arange(4, 8))]
  for _ in range(3):
    expected = next(whole)["label"]
    np.testing.assert_array_equal(np.concatenate([next(h)["label"] for h in halves]), expected)
  evals = [list(pipeline.eval_batches(images, labels, 8, rows=rows))
           for rows in (np.arange(0, 4), np.arange(4, 8))]
  seen = np.concatenate([b["label"][b["mask"] > 0] for part in evals for b in part])
  assert sorted(seen.tolist()) == list(range(20))  # Every image once; padding masked.
  mesh = jax.make_mesh((1, 1), ("data", "fsdp"))
  np.testing.assert_array_equal(
      sharding_lib.process_rows(sharding_lib.batch_sharding(mesh), 8), np.arange(8))


def test_initialize_takes_flags_then_environment_then_cluster_detection(monkeypatch):
  from carjax import distributed
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
               "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    monkeypatch.delenv(name, raising=False)
  assert not distributed.initialize() and calls == []  # Nothing given: one process.

  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("JAX_PROCESS_ID", "2")
  assert distributed.initialize()
  assert calls[-1] == dict(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=2)
  assert distributed.initialize("auto", "host0:99", 2, 1)  # Flags win over the environment.
  assert calls[-1] == dict(coordinator_address="host0:99", num_processes=2, process_id=1)
  assert not distributed.initialize("false") and len(calls) == 2

  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(name)
  with pytest.raises(ValueError, match="--num_processes"):
    distributed.initialize("auto", "host0:99")  # Half a description is an error.
  monkeypatch.setenv("JAX_NUM_PROCESSES", "four")
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
    distributed.initialize()
  monkeypatch.delenv("JAX_NUM_PROCESSES")

  monkeypatch.setenv("SLURM_NTASKS", "1")
  assert not distributed.initialize() and len(calls) == 2  # A one-task job: one process.
  monkeypatch.setenv("SLURM_NTASKS", "16")
  assert distributed.initialize()  # JAX reads the rest from SLURM.
  assert calls[-1] == dict(coordinator_address=None, num_processes=None, process_id=None)

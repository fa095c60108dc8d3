"""carjax.host_runtime: launchers run on the heap settings, which change speed and no number.

Also the persistent compilation cache: a second run of the same command compiles nothing.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from carjax import host_runtime
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="the heap settings are glibc (Linux) malloc tunables")


def _env(**extra):
  env = {k: v for k, v in os.environ.items()
         if k not in host_runtime.HEAP_ENV and not k.startswith("CARJAX_")}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT), **extra)
  return env


def _run(args, **extra):
  proc = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=_env(**extra),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_launchers_reexecute_onto_the_heap_settings_unless_switched_off():
  info = json.loads(_run(["-m", "launch.runtime_info"], CARJAX_COMPILATION_CACHE="0").stdout)
  assert info["heap_allocator_in_effect"] is True
  assert info["heap_environment"] == host_runtime.HEAP_ENV
  off = json.loads(_run(["-m", "launch.runtime_info"], CARJAX_HEAP_ALLOCATOR="0",
                        CARJAX_COMPILATION_CACHE="0").stdout)
  assert off["heap_allocator_in_effect"] is False
  assert off["compilation_cache_dir"] is None
  assert info["xla_compiler_options"]["efficientnet"]  # per-model options on CPU
  assert info["xla_compiler_options"]["custom_cnn"] is None


_FAULTS_PER_CALL = r"""
import resource, sys
from carjax import host_runtime
if sys.argv[1] == "in_process":
  assert host_runtime.set_heap_allocator_in_process()
import jax, jax.numpy as jnp
x, w = jnp.ones((64, 64, 64, 64)), jnp.ones((64, 64))  # 64 MB, and 64 MB per product
f = jax.jit(lambda x: jnp.tanh(x @ w).sum(axis=(1, 2)) + (x @ w).max(axis=(1, 2)))
f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
  f(x).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def _faults_per_call(mode, **extra):
  return float(_run(["-c", _FAULTS_PER_CALL, mode], **extra).stdout.split()[-1])


def test_heap_settings_stop_the_per_step_page_faults():
  """glibc's default maps and unmaps large temp buffers on every call; the settings keep them."""
  default = _faults_per_call("none", CARJAX_HEAP_ALLOCATOR="0")
  started_with = _faults_per_call("none", **host_runtime.HEAP_ENV)
  in_process = _faults_per_call("in_process")
  assert default > 10_000, default  # Each 64 MB buffer is 16,000 fresh pages per call.
  assert started_with < 0.05 * default, (started_with, default)
  assert in_process < 0.05 * default, (in_process, default)


def _train(folder, workdir, cache, **extra):
  _run(["-m", "launch.train", "--config=configs/tiny_cnn.py",
        f"--config.data.source=folder:{folder}", "--config.train.num_epochs=1",
        f"--workdir={workdir}"], CARJAX_COMPILATION_CACHE=str(cache), **extra)
  losses = [r["loss"] for r in map(json.loads, open(workdir / "metrics.jsonl"))
            if r.get("split") == "train"]
  assert losses
  return losses


def _cache_entries(cache: pathlib.Path) -> set[str]:
  return {p.name for p in cache.iterdir()} if cache.exists() else set()


@pytest.mark.slow
def test_heap_settings_change_no_number_and_the_cache_serves_a_rerun(tiny_folder, tmp_path):
  cache = tmp_path / "xla_cache"
  with_heap = _train(tiny_folder, tmp_path / "a", cache)
  entries = _cache_entries(cache)
  assert any("train_step" in name for name in entries), sorted(entries)
  without = _train(tiny_folder, tmp_path / "b", tmp_path / "other_cache",
                   CARJAX_HEAP_ALLOCATOR="0")
  assert with_heap == without  # bit for bit
  again = _train(tiny_folder, tmp_path / "c", cache)
  assert again == with_heap
  assert _cache_entries(cache) == entries  # every program of the rerun came from the cache

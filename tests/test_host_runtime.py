"""carjax.host_runtime: launchers run on glibc's huge-page malloc tuning, which removes the
per-step page faults, keeps memory bounded and changes no number.

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
    reason="the malloc tuning is a glibc (Linux) tunable")


def _env(**extra):
  env = {k: v for k, v in os.environ.items()
         if k != "GLIBC_TUNABLES" and not k.startswith("CARJAX_")}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT), **extra)
  return env


def _run(args, **extra):
  proc = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=_env(**extra),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_launchers_reexecute_onto_the_malloc_tuning_unless_switched_off():
  info = json.loads(_run(["-m", "launch.runtime_info"], CARJAX_COMPILATION_CACHE="0").stdout)
  assert info["malloc_tuning_in_effect"] is True
  assert info["glibc_tunables"] == host_runtime.TUNABLE
  # A user's own tunables are kept.
  kept = json.loads(_run(["-m", "launch.runtime_info"], CARJAX_COMPILATION_CACHE="0",
                         GLIBC_TUNABLES="glibc.malloc.tcache_count=7").stdout)
  assert kept["glibc_tunables"] == f"glibc.malloc.tcache_count=7:{host_runtime.TUNABLE}"
  off = json.loads(_run(["-m", "launch.runtime_info"], CARJAX_MALLOC_TUNING="0",
                        CARJAX_COMPILATION_CACHE="0").stdout)
  assert off["malloc_tuning_in_effect"] is False
  assert off["compilation_cache_dir"] is None
  assert info["xla_compiler_options"]["efficientnet"]  # per-model options on CPU
  assert info["xla_compiler_options"]["custom_cnn"] is None


_FAULTS_PER_CALL = r"""
import resource
import jax, jax.numpy as jnp
x, w = jnp.ones((64, 64, 64, 64)), jnp.ones((64, 64))  # 64 MB, and 64 MB per product
f = jax.jit(lambda x: jnp.tanh(x @ w).sum(axis=(1, 2)) + (x @ w).max(axis=(1, 2)))
f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
  f(x).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
rss_gb = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 2**20
print(faults, rss_gb)
"""


def _faults_per_call_and_rss(**extra):
  faults, rss = _run(["-c", _FAULTS_PER_CALL], **extra).stdout.split()[-2:]
  return float(faults), float(rss)


def _transparent_huge_pages_possible() -> bool:
  try:
    return "[never]" not in pathlib.Path(
        "/sys/kernel/mm/transparent_hugepage/enabled").read_text()
  except OSError:
    return False


@pytest.mark.skipif(not _transparent_huge_pages_possible(),
                    reason="the kernel has transparent huge pages off")
def test_malloc_tuning_cuts_the_per_step_page_faults_and_keeps_memory_bounded():
  """glibc maps and unmaps large temp buffers on every call; huge pages fault 512× less."""
  default, default_rss = _faults_per_call_and_rss(CARJAX_MALLOC_TUNING="0")
  tuned, tuned_rss = _faults_per_call_and_rss(GLIBC_TUNABLES=host_runtime.TUNABLE)
  assert default > 10_000, default  # Each 64 MB buffer is 16,000 fresh pages per call.
  assert tuned < 0.05 * default, (tuned, default)
  # Freed blocks still go back to the kernel: no growth beyond glibc's own.
  assert tuned_rss < default_rss + 0.5, (tuned_rss, default_rss)


def _train(folder, workdir, cache, **extra):
  _run(["-m", "launch.train", "--config=configs/custom_cnn.py:tiny",
        f"--config.data.source=folder:{folder}", "--config.train.num_epochs=1",
        f"--workdir={workdir}"], CARJAX_COMPILATION_CACHE=str(cache), **extra)
  losses = [r["loss"] for r in map(json.loads, open(workdir / "metrics.jsonl"))
            if r.get("split") == "train"]
  assert losses
  return losses


def _cache_entries(cache: pathlib.Path) -> set[str]:
  return {p.name for p in cache.iterdir()} if cache.exists() else set()


@pytest.mark.slow
def test_malloc_tuning_changes_no_number_and_the_cache_serves_a_rerun(tiny_folder, tmp_path):
  cache = tmp_path / "xla_cache"
  with_heap = _train(tiny_folder, tmp_path / "a", cache)
  entries = _cache_entries(cache)
  assert any("train_step" in name for name in entries), sorted(entries)
  without = _train(tiny_folder, tmp_path / "b", tmp_path / "other_cache",
                   CARJAX_MALLOC_TUNING="0")
  assert with_heap == without  # bit for bit
  again = _train(tiny_folder, tmp_path / "c", cache)
  assert again == with_heap
  assert _cache_entries(cache) == entries  # every program of the rerun came from the cache

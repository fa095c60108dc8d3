"""benchmarks/settings.py: flag validation and the stack × environment variants a round
measures, with each worker's allocator and XLA options."""

from __future__ import annotations

import pytest

from carjax import host_runtime
from benchmarks import runner
from benchmarks import settings as bench_settings


def test_environment_variants_set_each_workers_allocator_and_options():
  settings = bench_settings.Settings(models=("tiny_cnn",), stacks=("carjax", "keras", "torch"),
                             torch_layouts=("nchw",), env_variants=bench_settings.ENV_VARIANTS)
  keys = {k[0]: k for k in bench_settings.stack_keys(settings)}
  assert sorted(keys) == sorted([
      "carjax", "keras", "torch_nchw", "keras+hugepages", "torch_nchw+hugepages", "carjax+glibc",
      "carjax+no_xla_options", "carjax+warm_cache"])
  has_heap = host_runtime.malloc_tuning_in_effect
  no_heap = lambda env: not host_runtime.malloc_tuning_in_effect(env)
  env_of = lambda key: runner.worker_env(settings, keys[key][1], keys[key][3])
  assert has_heap(env_of("carjax")) and has_heap(env_of("keras+hugepages"))
  assert has_heap(env_of("torch_nchw+hugepages")) and has_heap(env_of("carjax+warm_cache"))
  assert no_heap(env_of("keras")) and no_heap(env_of("torch_nchw"))
  assert no_heap(env_of("carjax+glibc"))
  assert env_of("carjax+glibc")[host_runtime.SWITCH] == "0"
  assert env_of("carjax+no_xla_options")["CARJAX_XLA_CPU_OPTIONS"] == "0"
  assert "CARJAX_XLA_CPU_OPTIONS" not in env_of("carjax")
  order = runner._warm_after_shipped(list(keys.values()))  # pylint: disable=protected-access
  names = [k[0] for k in order]
  assert names.index("carjax+warm_cache") == names.index("carjax") + 1
  with pytest.raises(ValueError, match="environment variant"):
    bench_settings.Settings(env_variants=("tcmalloc",))


def test_settings_validation():
  with pytest.raises(ValueError, match="unknown model"):
    bench_settings.Settings(models=("resnet",))
  with pytest.raises(ValueError, match="unknown stack"):
    bench_settings.Settings(stacks=("mxnet",))
  with pytest.raises(ValueError, match="repeats"):
    bench_settings.Settings(repeats=0)

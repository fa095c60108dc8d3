"""Process-level settings that make XLA:CPU fast: the glibc heap and the compilation cache.

Why the heap matters: XLA:CPU allocates each execution's temporary buffer afresh (3.6 GB for
the EfficientNet-B0 train step at 224 px / batch 32). glibc serves blocks above its mmap
threshold with `mmap` and returns them to the kernel on `free`, so every step touches its
whole temp buffer for the first time again: about a million page faults per step. Keeping the
blocks in the heap (no mmap, no trimming, one arena) removes them and changes no number
(`../shared/notes/cpu-speed-levers.md`; RESULTS.md "Speed").

glibc reads these settings when the process starts, so the launchers re-execute themselves
once with them in the environment (`ensure_heap_allocator`, called from `launch/__init__.py`
before anything imports jax). Code that imports carjax as a library gets the part that can be
set in a running process (`mallopt`: no mmap, one arena, a 2 GiB trim threshold).

Switch it off with `CARJAX_HEAP_ALLOCATOR=0` (e.g. to measure the difference, or where the
process must not keep its peak heap resident).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys

# glibc's malloc tunables. 1 TiB: larger than any temp buffer, so the heap is never trimmed.
HEAP_ENV = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(1 << 40),
    "MALLOC_ARENA_MAX": "1",
}
SWITCH = "CARJAX_HEAP_ALLOCATOR"
# Set in the re-executed process so that a failed re-exec can never loop.
_REEXEC_MARK = "CARJAX_HEAP_ALLOCATOR_APPLIED"
# Packages whose presence means JAX will run on an accelerator, not on the CPU.
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin", "libtpu")

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def _is_glibc_linux() -> bool:
  return sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None


def _runs_on_cpu() -> bool:
  """Whether JAX will compute on the CPU, decided without importing jax."""
  platforms = os.environ.get("JAX_PLATFORMS", os.environ.get("JAX_PLATFORM_NAME", ""))
  if platforms:
    return platforms.split(",")[0].strip().lower() == "cpu"
  return not any(importlib.util.find_spec(name) for name in _ACCELERATOR_PLUGINS)


def heap_allocator_wanted() -> bool:
  """True on a glibc Linux CPU run unless `CARJAX_HEAP_ALLOCATOR=0`."""
  if os.environ.get(SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
    return False
  return _is_glibc_linux() and _runs_on_cpu()


def heap_allocator_in_effect() -> bool:
  """True when this process was started with every setting of `HEAP_ENV`."""
  return all(os.environ.get(k) == v for k, v in HEAP_ENV.items())


def ensure_heap_allocator() -> None:
  """Re-executes this process once with `HEAP_ENV` set, when wanted and not yet in effect.

  Call it before jax is imported (a launcher's package `__init__`); it returns normally when
  nothing needs doing, and never returns when it re-executes.
  """
  if not heap_allocator_wanted() or heap_allocator_in_effect():
    return
  if os.environ.get(_REEXEC_MARK) or "jax" in sys.modules or not getattr(sys, "orig_argv", None):
    set_heap_allocator_in_process()
    return
  env = dict(os.environ, **HEAP_ENV, **{_REEXEC_MARK: "1"})
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def set_heap_allocator_in_process() -> bool:
  """The part of the setting a running process can still make; True when glibc accepted it.

  `mallopt` takes an `int`, so the trim threshold stops at 2 GiB: enough for the custom CNN
  and for inference, not for the largest train steps, which is why launchers re-execute.
  """
  if not heap_allocator_wanted() or heap_allocator_in_effect():
    return False
  libc = ctypes.CDLL(None)
  return all(libc.mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))


def default_compilation_cache_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "carjax", "xla")


def enable_compilation_cache(cache_dir: str | None = None) -> str | None:
  """Turns on JAX's persistent compilation cache; returns its folder (None: switched off).

  A resumed or repeated run then loads its compiled steps instead of compiling them again.
  `CARJAX_COMPILATION_CACHE=0` switches it off; `CARJAX_COMPILATION_CACHE=DIR` moves it.
  """
  setting = os.environ.get("CARJAX_COMPILATION_CACHE", "")
  if setting.strip().lower() in ("0", "false", "no", "off"):
    return None
  cache_dir = cache_dir or setting or default_compilation_cache_dir()
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  # Cache every step, however fast it compiled: CPU compiles of the small models take 1-5 s.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return cache_dir

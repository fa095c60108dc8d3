"""Process-level settings that make XLA:CPU fast: glibc's malloc and the compilation cache.

Why malloc matters: XLA:CPU allocates each execution's temporary buffer afresh (3.6 GB for
the EfficientNet-B0 train step at 224 px / batch 32). glibc serves blocks above its mmap
threshold with `mmap` and unmaps them on `free`, so every step first-touches its whole temp
buffer again, 4 KiB page by page: about a million page faults per step. With glibc's
`glibc.malloc.hugetlb=1` tunable those blocks are backed by 2 MiB transparent huge pages (the
kernel's THP mode `madvise` suffices): ~500× fewer faults, and still returned to the kernel
on `free`, so memory stays bounded. (Keeping the blocks in the heap instead — no mmap, no
trimming — removes every fault but fragments the heap: the B0 train step grew to 20 GB
resident in nine steps, RESULTS.md "Speed".) It changes no number.

glibc reads tunables when the process starts, so the launchers re-execute themselves once
with the tunable in the environment (`ensure_malloc_tuning`, called from
`launch/__init__.py` before anything imports jax). Code that imports carjax as a library can
start Python with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` itself.

Switch it off with `CARJAX_MALLOC_TUNING=0` (e.g. to measure the difference).
"""

from __future__ import annotations

import importlib.util
import os
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
SWITCH = "CARJAX_MALLOC_TUNING"
# Set in the re-executed process so that a failed re-exec can never loop.
_REEXEC_MARK = "CARJAX_MALLOC_TUNING_APPLIED"
# Packages whose presence means JAX will run on an accelerator, not on the CPU.
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin", "libtpu")


def _is_glibc_linux() -> bool:
  return sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None


def _runs_on_cpu() -> bool:
  """Whether JAX will compute on the CPU, decided without importing jax."""
  platforms = os.environ.get("JAX_PLATFORMS", os.environ.get("JAX_PLATFORM_NAME", ""))
  if platforms:
    return platforms.split(",")[0].strip().lower() == "cpu"
  return not any(importlib.util.find_spec(name) for name in _ACCELERATOR_PLUGINS)


def malloc_tuning_wanted() -> bool:
  """True on a glibc Linux CPU run unless `CARJAX_MALLOC_TUNING=0`."""
  if os.environ.get(SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
    return False
  return _is_glibc_linux() and _runs_on_cpu()


def malloc_tuning_in_effect(environ=None) -> bool:
  """True when this process (or `environ`) has `TUNABLE` in its GLIBC_TUNABLES."""
  environ = os.environ if environ is None else environ
  return TUNABLE in environ.get("GLIBC_TUNABLES", "").split(":")


def with_malloc_tuning(environ: dict[str, str]) -> dict[str, str]:
  """A copy of `environ` whose GLIBC_TUNABLES also holds `TUNABLE`."""
  if malloc_tuning_in_effect(environ):
    return dict(environ)
  current = environ.get("GLIBC_TUNABLES", "")
  return dict(environ, GLIBC_TUNABLES=f"{current}:{TUNABLE}" if current else TUNABLE)


def without_malloc_tuning(environ: dict[str, str]) -> dict[str, str]:
  """A copy of `environ` without `TUNABLE` and with the switch off."""
  kept = [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t and t != TUNABLE]
  environ = {k: v for k, v in environ.items() if k != "GLIBC_TUNABLES"}
  if kept:
    environ["GLIBC_TUNABLES"] = ":".join(kept)
  environ[SWITCH] = "0"
  return environ


def ensure_malloc_tuning() -> None:
  """Re-executes this process once with `TUNABLE` set, when wanted and not yet in effect.

  Call it before jax is imported (a launcher's package `__init__`); it returns normally when
  nothing needs doing, and never returns when it re-executes.
  """
  if not malloc_tuning_wanted() or malloc_tuning_in_effect():
    return
  if os.environ.get(_REEXEC_MARK) or not getattr(sys, "orig_argv", None):
    return
  env = with_malloc_tuning(dict(os.environ, **{_REEXEC_MARK: "1"}))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


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

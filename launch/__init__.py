"""Thin absl entry points: flags, then one library call. Run as `python -m launch.NAME`.

Importing this package from a launcher (`python -m launch.NAME`) first puts the process on
glibc's huge-page malloc tuning (it re-executes itself once with it; `CARJAX_MALLOC_TUNING=0`
switches that off) and turns on JAX's persistent compilation cache, so a repeated or
resumed run loads its compiled steps (`CARJAX_COMPILATION_CACHE=0` switches it off,
`CARJAX_COMPILATION_CACHE=DIR` moves it from ~/.cache/carjax/xla). See carjax/host_runtime.py.
"""

import sys

from carjax import host_runtime


def _started_as_launcher() -> bool:
  argv = getattr(sys, "orig_argv", [])
  return len(argv) > 2 and argv[1] == "-m" and argv[2].startswith("launch.")


if _started_as_launcher():
  host_runtime.ensure_malloc_tuning()
  host_runtime.enable_compilation_cache()

"""Environment facts recorded with every benchmark: versions, CPU, threads, flags, date.

Versions come from package metadata, so reading them imports neither TensorFlow nor
PyTorch (the runner stays light; each stack is imported only in its own worker process).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import os
import platform
import subprocess

PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "tensorflow-cpu", "tensorflow",
            "keras", "torch", "torchvision", "efficientnet-lite-pytorch")

# Which importable module each optional stack needs.
STACK_MODULES = {"carjax": ("jax", "flax"), "keras": ("keras", "tensorflow"),
                 "torch": ("torch",)}


def package_versions() -> dict[str, str | None]:
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def stack_available(stack: str) -> tuple[bool, str]:
  """(installed?, reason) without importing the stack."""
  missing = [m for m in STACK_MODULES[stack] if importlib.util.find_spec(m) is None]
  if missing:
    return False, f"not installed ({', '.join(missing)} missing; pip install -e .[bench])"
  return True, ""


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def cpu_flags_of_interest() -> list[str]:
  """AVX-512 / bf16 / AMX flags, which decide which kernels oneDNN, Eigen and XLA use."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          flags = line.split(":", 1)[1].split()
          return sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma")))
  except OSError:
    pass
  return []


def load_average() -> list[float] | None:
  try:
    return [float(v) for v in open("/proc/loadavg").read().split()[:3]]
  except OSError:
    return None


def git_commit() -> str | None:
  try:
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                         timeout=5, cwd=os.path.dirname(__file__))
    return out.stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    return None


def facts() -> dict:
  return {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "python": platform.python_version(),
      "platform": platform.platform(),
      "cpu_model": cpu_model(),
      "cpu_flags": cpu_flags_of_interest(),
      "cpu_count": os.cpu_count(),
      "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
      "load_average_at_start": load_average(),
      "versions": package_versions(),
      "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
      "git_commit": git_commit(),
  }

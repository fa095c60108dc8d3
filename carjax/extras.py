"""Optional dependencies: which pip extra brings which package, and one clear line when absent.

The base install (`pip install -e .`) trains, evaluates and predicts. Heavier parts are extras
named after what they enable (see pyproject.toml): `export` (TensorFlow SavedModel/TFLite),
`tfds` (TensorFlow Datasets sources), `prepare` (downloading and reading Stanford Cars),
`keras` (Keras weight files), `demo` (the web page), `tensorboard`. Modules that need one
import it through `import_optional`, so a missing extra is reported as the one command that
installs it; launchers wrap their `main` in `exit_on_missing_extra` to print that line and
exit with status 2 instead of a traceback.
"""

from __future__ import annotations

import functools
import importlib
import sys
from types import ModuleType
from typing import Callable

EXIT_MISSING_EXTRA = 2


class MissingExtraError(ImportError):
  """An optional package is not installed; the message names the extra that installs it."""

  def __init__(self, module: str, extra: str, purpose: str):
    self.module, self.extra, self.purpose = module, extra, purpose
    super().__init__(f"{purpose} needs the optional package '{module.split('.')[0]}', which is "
                     f"not installed: run  pip install -e \".[{extra}]\"  (from the carjax "
                     "repository root).")


def import_optional(module: str, extra: str, purpose: str) -> ModuleType:
  """`importlib.import_module(module)`, or `MissingExtraError` naming `extra`.

  Only a missing top-level package is reported as a missing extra; an installed package that
  fails to import for another reason keeps its own error.
  """
  try:
    return importlib.import_module(module)
  except ModuleNotFoundError as e:
    if e.name and module.split(".")[0] == e.name.split(".")[0]:
      raise MissingExtraError(module, extra, purpose) from e
    raise


def exit_on_missing_extra(main: Callable) -> Callable:
  """Wraps an absl `main`: a `MissingExtraError` becomes one line on stderr and exit code 2."""
  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except MissingExtraError as e:
      print(f"error: {e}", file=sys.stderr)
      return EXIT_MISSING_EXTRA
  return wrapped

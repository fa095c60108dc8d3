"""How the launchers end: expected errors as one line and exit code 2, interruptions as one
line and 128 + the signal number, anything else (a bug) with its full traceback.

  from carjax import cli
  if __name__ == "__main__":
    cli.run(main)

`carjax.errors.UserError` (a bad option, a locked or mismatched workdir, unusable data, a
diverged run), `carjax.extras.MissingExtraError` (an optional package not installed; the line
names the pip extra) and absl's `UsageError` and flag-parsing errors are expected errors.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Callable

from absl import app
from absl import flags

from carjax.errors import UserError
from carjax.extras import MissingExtraError

USER_ERROR_EXIT = 2


def _program() -> str:
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  return spec.name if spec is not None and spec.name else os.path.basename(sys.argv[0])


def fail(message: str) -> None:
  """Prints `message` as one `error:` line (further lines indented) and exits with code 2."""
  lines = str(message).strip().splitlines() or ["(no message)"]
  print(f"{_program()}: error: {lines[0]}", file=sys.stderr)
  for line in lines[1:]:
    print(f"  {line}", file=sys.stderr)
  sys.stderr.flush()
  sys.exit(USER_ERROR_EXIT)


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"{e} (--helpshort lists the flags)")
  except (KeyError, AttributeError) as e:
    # ml_collections' config flags raise these for an override of a field that does not exist.
    field = str(e).strip("\"'")
    named = [a for a in argv[1:] if a.startswith("--") and field in a.split("=")[0]]
    fail(f"{named[0] if named else 'a --config override'} names no config field "
         f"({field!r} does not exist; --helpfull lists the config's fields)")
  return argv  # Not reached.


def _guarded(main: Callable[[list[str]], object]) -> Callable[[list[str]], object]:
  def wrapper(argv):
    try:
      return main(argv)
    except (UserError, MissingExtraError, app.UsageError) as e:
      fail(str(e))
    except KeyboardInterrupt as e:
      signum = getattr(e, "signum", signal.SIGINT)
      print(f"{_program()}: interrupted by {signal.Signals(signum).name}; run the same "
            "command again to resume", file=sys.stderr)
      sys.stderr.flush()
      sys.exit(128 + signum)
  return wrapper


def run(main: Callable[[list[str]], object]) -> None:
  """`absl.app.run(main)` with the exit behaviour described in the module doc."""
  app.run(_guarded(main), flags_parser=_parse_flags)

r"""Prints the README's command-line reference: every flag of every launcher.

  python -m tools.cli_reference > /tmp/cli.md   # then paste over README's "Command-line reference"

Each launcher is imported in a fresh process (two launchers may define the same flag name);
its flags are those absl registers for `launch.*` and `carjax.*` modules, with their defaults
and help as `--help` prints them. `tests/test_launch.py` fails when the README misses a flag.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_DUMP_FLAGS = """
import importlib, json, sys
from absl import flags
importlib.import_module(sys.argv[1])
rows = []
for module, module_flags in sorted(flags.FLAGS.flags_by_module_dict().items()):
  if not module.startswith(("launch.", "carjax.")):
    continue
  for flag in module_flags:
    default = flag.default_as_str if flag.default_as_str is not None else ""
    rows.append({"name": flag.name, "default": default.strip("'"), "help": flag.help,
                 "boolean": flag.boolean})
print(json.dumps(sorted(rows, key=lambda r: r["name"])))
"""


def launchers() -> list[str]:
  """`launch.<name>` of every launcher module, sorted."""
  folder = os.path.join(REPO_ROOT, "launch")
  return sorted(f"launch.{name[:-3]}" for name in os.listdir(folder)
                if name.endswith(".py") and name != "__init__.py")


def flags_of(module: str) -> list[dict]:
  """[{name, default, help, boolean}] of `module`'s flags, from a fresh process."""
  proc = subprocess.run([sys.executable, "-c", _DUMP_FLAGS, module], cwd=REPO_ROOT,
                        capture_output=True, text=True, check=True,
                        env=dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3"))
  return json.loads(proc.stdout.strip().splitlines()[-1])


# Defaults computed on the machine that runs the launcher, described instead of shown.
_MACHINE_DEFAULTS = {
    ("launch.benchmark", "data"): "$CARJAX_SHARED_DATA/cars20, else ../shared/data/cars20",
    ("launch.benchmark", "threads"): "the CPUs this process may use",
}


def _cell(text: str) -> str:
  return " ".join(str(text).split()).replace("|", "\\|")


def markdown() -> str:
  lines = ["## Command-line reference", "",
           "Every launcher's own flags (`python -m tools.cli_reference` writes this section; "
           "`python -m launch.<name> --help` prints the same). A boolean flag `--x` is turned "
           "off with `--nox`. `--config` takes a file of `configs/` (with `:tiny` for its small "
           "variant) and then any of its fields as `--config.<field>=<value>`.", ""]
  for module in launchers():
    lines += [f"### `python -m {module}`", "", "| flag | default | what it does |",
              "|---|---|---|"]
    rows = flags_of(module)
    for row in rows:
      default = row["default"] if row["default"] not in ("", "None") else ""
      default = f"`{_cell(default)}`" if default else ""
      default = _MACHINE_DEFAULTS.get((module, row["name"]), default)
      lines.append(f"| `--{row['name']}` | {default} | {_cell(row['help'])} |")
    if not rows:
      lines.append("| (none) | | |")
    lines.append("")
  return "\n".join(lines)


if __name__ == "__main__":
  print(markdown())

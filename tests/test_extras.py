"""Optional dependencies: a missing extra is one line naming the pip command, exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from carjax import extras
from tests.conftest import REPO_ROOT


def test_present_module_is_returned():
  assert extras.import_optional("json", "demo", "Anything").dumps([1]) == "[1]"


def test_missing_module_names_its_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "flask", None)  # As if not installed.
  with pytest.raises(extras.MissingExtraError) as info:
    extras.import_optional("flask", "demo", "The demo page")
  assert 'pip install -e ".[demo]"' in str(info.value)
  assert str(info.value).startswith("The demo page needs the optional package 'flask'")


def test_an_installed_module_failing_on_its_own_dependency_keeps_its_error(tmp_path,
                                                                          monkeypatch):
  (tmp_path / "half_installed.py").write_text("import zz_not_a_module_anywhere\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  with pytest.raises(ModuleNotFoundError) as info:
    extras.import_optional("half_installed", "demo", "X")
  assert not isinstance(info.value, extras.MissingExtraError)


def test_wrapped_main_prints_one_line_and_exits_2(capsys):
  def main(argv):
    del argv
    raise extras.MissingExtraError("tensorflow", "export", "Exporting")
  assert extras.exit_on_missing_extra(main)(["prog"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and 'pip install -e ".[export]"' in err


@pytest.mark.parametrize("launcher,flags,blocked,extra", [
    ("launch.demo", ["--workdir=RUN"], "flask", "demo"),
    ("launch.export", ["--workdir=RUN", "--output=OUT"], "tensorflow", "export"),
    ("launch.prepare_data", ["--download=kaggle", "--output=OUT"], "kagglehub", "prepare"),
])
def test_launchers_without_their_extra(launcher, flags, blocked, extra, tmp_path):
  argv = [launcher] + [f.replace("RUN", str(tmp_path / "run")).replace("OUT", str(tmp_path / "o"))
                       for f in flags]
  code = (f"import runpy, sys; sys.modules[{blocked!r}] = None; sys.argv = {argv!r}; "
          f"runpy.run_module({launcher!r}, run_name='__main__')")
  completed = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=300, check=False)
  assert completed.returncode == 2, completed.stderr
  lines = completed.stderr.strip().splitlines()
  assert len(lines) == 1 and f'pip install -e ".[{extra}]"' in lines[0], completed.stderr

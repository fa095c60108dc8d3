"""Tests for launch.prepare_data on a tiny fake Kaggle download (tests/fake_stanford_cars.py)."""

from __future__ import annotations

import subprocess
import sys

from tests import fake_stanford_cars as fakes
from tests.conftest import REPO_ROOT


def test_launcher_without_input_prints_instructions():
  completed = subprocess.run(
      [sys.executable, "-m", "launch.prepare_data"], cwd=REPO_ROOT,
      capture_output=True, text=True, timeout=120, check=False)
  assert completed.returncode == 2
  assert "python -m launch.prepare_data --input=DIR" in completed.stderr
  assert "kaggle" in completed.stderr


def test_launcher_prepares_a_download(tmp_path):
  download = tmp_path / "download"
  fakes.write_kaggle(download, with_test=False)
  completed = subprocess.run(
      [sys.executable, "-m", "launch.prepare_data", f"--input={download}",
       f"--output={tmp_path / 'out'}", "--images=recipe", "--num_makes=2",
       "--min_images_per_make=1", "--seed=3"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert completed.returncode == 0, completed.stderr
  assert "2 makes" in completed.stdout
  assert (tmp_path / "out" / "MANIFEST.csv").exists()

"""launch/: train, evaluate and predict end to end, as a user runs them, on two devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def _run(module, *args, devices=2):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))
  proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_launchers_end_to_end_on_two_devices(tiny_folder, tmp_path):
  workdir = tmp_path / "run"
  proc = _run("launch.train", "--config=configs/custom_cnn.py:tiny",
              f"--config.data.source=folder:{tiny_folder}", "--config.train.num_epochs=1",
              f"--workdir={workdir}")
  assert "mesh over 2 devices" in proc.stderr
  records = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  assert {r["split"] for r in records} == {"train", "val"}
  assert (workdir / "checkpoints" / "best").is_dir() and (workdir / "checkpoints" / "last").is_dir()
  summary = json.load(open(workdir / "eval_best_val" / "metrics.json"))
  assert summary["count"] == 12 and 0.0 <= summary["accuracy"] <= 1.0
  assert json.load(open(workdir / "class_names.json")) == ["Audi", "BMW", "Ford"]

  out = tmp_path / "eval_folder"
  _run("launch.evaluate", f"--workdir={workdir}", f"--folder={tiny_folder / 'val'}",
       f"--output={out}")
  folder_summary = json.load(open(out / "metrics.json"))
  assert folder_summary["count"] == 12
  assert folder_summary["accuracy"] == pytest.approx(summary["accuracy"])
  for name in ("per_class.csv", "confusion_matrix.csv", "confusion_matrix.png",
               "predictions.csv"):
    assert (out / name).stat().st_size > 0

  bad = tiny_folder / "val" / "Audi" / "broken.jpg"
  bad.write_bytes(b"not an image")
  proc = _run("launch.predict", f"--workdir={workdir}", f"--input={tiny_folder / 'val'}",
              "--format=json", "--top_k=2")
  payload = json.loads(proc.stdout)
  assert len(payload["predictions"]) == 12
  assert all(len(p["top_k"]) == 2 for p in payload["predictions"])
  assert sum(t["probability"] for t in payload["predictions"][0]["top_k"]) <= 1.0 + 1e-6
  assert payload["unreadable"][0]["file"].endswith("broken.jpg")
  assert "broken.jpg" in proc.stderr


def test_readme_documents_every_launcher_flag():
  from tools import cli_reference  # pylint: disable=g-import-not-at-top
  readme = (REPO_ROOT / "README.md").read_text()
  _, _, reference = readme.partition("## Command-line reference")
  assert reference, "README.md has no 'Command-line reference' section"
  sections = {}
  for block in reference.split("\n### `python -m ")[1:]:
    module, _, body = block.partition("`")
    sections[module] = body.split("\n## ")[0]
  for module in cli_reference.launchers():
    assert module in sections, f"README's command-line reference misses {module}"
    for row in cli_reference.flags_of(module):
      assert f"| `--{row['name']}` |" in sections[module], (
          f"README's command-line reference misses {module} --{row['name']} "
          "(python -m tools.cli_reference writes the section)")

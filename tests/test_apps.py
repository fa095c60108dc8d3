"""The applications on a tiny model trained here: `predict --gradcam`, the README's Python
example, and the demo page driven end to end in a real headless Chromium.

The browser test uses Debian's chromium and its chromedriver (/usr/bin/chromedriver; nothing
is downloaded at run time; .ci/run installs both) and skips, saying so, where they are absent.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
from PIL import Image
import pytest

from carjax import inference
from carjax import explain
from carjax import plotting
from carjax import evaluation
from tests.conftest import REPO_ROOT
from tests.tiny_run import train_tiny_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("apps")
  workdir, data = train_tiny_run(root)
  photos = sorted((data / "val").rglob("*.jpg"))
  return workdir, photos


def _run(*args, timeout=300):
  return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                        timeout=timeout, check=False)


def test_predict_prints_only_results_and_writes_gradcam_overlays(tiny_run, tmp_path):
  workdir, photos = tiny_run
  chosen = photos[:3]
  out = tmp_path / "gradcam"
  completed = _run("-m", "launch.predict", f"--workdir={workdir}", "--format=json",
                   f"--gradcam={out}", *(f"--input={p}" for p in chosen))
  assert completed.returncode == 0, completed.stderr
  results = json.loads(completed.stdout)["predictions"]  # Nothing but the JSON on stdout.
  assert [r["file"] for r in results] == [str(p) for p in chosen]
  # No library INFO chatter (orbax, absl) on stderr either: one summary line.
  assert completed.stderr.strip().splitlines() == [f"Grad-CAM overlays: 3 in {out}"]

  predictor = inference.Predictor(str(workdir))
  images = np.stack([predictor.load_image(str(p)) for p in chosen])
  heatmaps, probs = explain.PredictorGradCam(predictor)(images)
  for photo, image, heatmap, p, result in zip(chosen, images, heatmaps, probs, results):
    written = np.asarray(Image.open(out / f"{photo.stem}_gradcam.png"))
    np.testing.assert_array_equal(written, plotting.overlay_heatmap(image, heatmap))
    assert not np.array_equal(written, image)  # The heat map is over the photo.
    assert result["top_k"][0]["make"] == predictor.class_names[int(np.argmax(p))]


def _readme_python_example() -> str:
  readme = (REPO_ROOT / "README.md").read_text()
  section = readme.split("## Python API", 1)[1]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs(tiny_run):
  workdir, photos = tiny_run
  code = _readme_python_example()
  assert "runs/lite0_finetune" in code and "my_car.jpg" in code
  code = code.replace("runs/lite0_finetune", str(workdir)).replace("my_car.jpg", str(photos[0]))
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    exec(compile(code, "README.md", "exec"), {})  # pylint: disable=exec-used
  lines = printed.getvalue().strip().splitlines()
  class_names = json.loads((workdir / "class_names.json").read_text())
  assert len(lines) == 3 and all(line.split(":")[0] in class_names for line in lines)
  assert sum(float(line.rsplit(" ", 1)[1].rstrip("%")) for line in lines) <= 100.05


# ---------------------------------------------------------------------------------------
# The demo page in a real browser.


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def _demo_server(workdir):
  port = _free_port()
  server = subprocess.Popen(
      [sys.executable, "-m", "launch.demo", f"--workdir={workdir}", f"--port={port}"],
      cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  url = f"http://127.0.0.1:{port}/"
  try:
    deadline = time.monotonic() + 180
    while True:
      if server.poll() is not None:
        pytest.fail(f"the demo server exited: {server.stdout.read()}")
      try:
        with urllib.request.urlopen(url, timeout=5) as response:
          if response.status == 200:
            break
      except OSError:
        if time.monotonic() > deadline:
          pytest.fail("the demo server did not answer within 180 s")
        time.sleep(0.5)
    yield url
  finally:
    server.terminate()
    try:
      server.wait(timeout=30)
    except subprocess.TimeoutExpired:
      server.kill()
      server.wait()
  assert server.returncode is not None  # Stopped by the test.


def _browser():
  if not CHROMIUM or not os.path.exists(CHROMEDRIVER):
    pytest.skip("the demo's browser test needs Debian's chromium and chromium-driver "
                "(apt-get install chromium chromium-driver); .ci/run installs them")
  webdriver = pytest.importorskip("selenium.webdriver",
                                  reason='needs selenium: pip install -e ".[test]"')
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                   "--window-size=1000,900", "--disable-gpu"):
    options.add_argument(argument)
  # An explicit driver path: Selenium Manager downloads nothing.
  service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
  return webdriver.Chrome(options=options, service=service)


def _cards(driver):
  """What the page shows: [{file, makes, percents, images loaded, error}] per result card."""
  return driver.execute_script("""
    return [...document.querySelectorAll('.card.result')].map(c => ({
      file: c.dataset.file,
      makes: [...c.querySelectorAll('.row .make')].map(e => e.textContent),
      percents: [...c.querySelectorAll('.row .prob')].map(e => parseFloat(e.textContent)),
      widths: [...c.querySelectorAll('img')].map(i => i.complete ? i.naturalWidth : 0),
      error: (c.querySelector('.error') || {}).textContent || null}));""")


def test_demo_page_in_a_real_browser(tiny_run, tmp_path):
  pytest.importorskip("flask", reason='the demo needs the demo extra: pip install -e ".[demo]"')
  workdir, photos = tiny_run
  chosen = [photos[0], photos[-1]]
  broken = tmp_path / "broken.jpg"
  broken.write_bytes(b"this is not a photo")
  predictor = inference.Predictor(str(workdir))
  expected, _ = predictor.predict_files([str(p) for p in chosen], top_k=3)
  _, size = predictor.image_size  # The pictures are shown at the model input's width.
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top

  driver = _browser()
  try:
    with _demo_server(workdir) as url:
      driver.get(url)
      assert "Which make is this car?" in driver.page_source
      assert "custom_cnn, 3 makes" in driver.find_element(By.CLASS_NAME, "model").text
      # Choosing files (the drop zone's file picker).
      driver.find_element(By.ID, "photos").send_keys(
          "\n".join(str(p) for p in [*chosen, broken]))
      WebDriverWait(driver, 120).until(
          lambda d: len(_cards(d)) == 3 and all(w == size for c in _cards(d)[:2]
                                                for w in c["widths"]))
      cards = _cards(driver)
      assert [c["file"] for c in cards] == [p.name for p in chosen] + ["broken.jpg"]
      for card, want in zip(cards, expected):
        assert card["makes"] == [name for name, _ in want["top_k"]]
        np.testing.assert_allclose(card["percents"], [100 * p for _, p in want["top_k"]],
                                   atol=0.051)
        assert card["widths"] == [size, size]  # The photo and its Grad-CAM overlay.
      assert "not a readable image" in cards[2]["error"]
      driver.save_screenshot(str(tmp_path / "demo.png"))

      # Dropping a photo on the drop zone (a real drop event with the file in it).
      driver.execute_script("""
        const dt = new DataTransfer();
        dt.items.add(document.getElementById('photos').files[1]);
        document.getElementById('drop').dispatchEvent(
            new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));""")
      WebDriverWait(driver, 120).until(
          lambda d: [c["file"] for c in _cards(d)] == [chosen[1].name])
      assert _cards(driver)[0]["makes"] == [name for name, _ in expected[1]["top_k"]]
  finally:
    driver.quit()
  with Image.open(tmp_path / "demo.png") as screenshot:
    assert screenshot.size[0] >= 900


def _confidences(eval_dir):
  with open(os.path.join(eval_dir, "predictions.csv"), newline="") as f:
    return {r["file"]: float(r["confidence"]) for r in csv.DictReader(f)}


def test_evaluate_with_flip_tta_and_another_size_writes_beside_the_run_s_own(tiny_run):
  workdir, _ = tiny_run
  own = evaluation.evaluate_workdir(workdir, split="val")
  single = evaluation.evaluate_workdir(workdir, split="val", image_size=(24, 48))
  flip = evaluation.evaluate_workdir(workdir, split="val", flip_tta=True, image_size=(24, 48))
  assert (own["flip_tta"], single["flip_tta"], flip["flip_tta"]) == (False, False, True)
  assert flip["image_size"] == single["image_size"] == [24, 48] != own["image_size"]
  with open(os.path.join(workdir, "eval_best_val", "metrics.json")) as f:
    assert json.load(f)["accuracy"] == own["accuracy"]  # Not overwritten by the others.
  one_view = _confidences(os.path.join(workdir, "eval_best_val_24x48"))
  both_views = _confidences(os.path.join(workdir, "eval_best_val_flip_24x48"))
  assert one_view.keys() == both_views.keys() and len(one_view) == own["count"]
  # The mirrored view is really averaged in: the confidences move.
  assert max(abs(one_view[k] - both_views[k]) for k in one_view) > 1e-4

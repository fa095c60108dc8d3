"""A local web page to try a trained model: drop photos, see the top-3 makes and Grad-CAM.

Built on Flask: a small, long-maintained WSGI framework whose request parsing (multipart
uploads, size limits) and development server are all this single-user page needs; no async
stack or build step. The model runs in this process through `carjax.inference.Predictor`, so
the page shows exactly what `launch/predict.py` prints. Start it with
``python -m launch.demo --workdir=RUN`` and open the address it prints.

Routes: ``GET /`` the page; ``POST /api/predict`` multipart field ``photos`` (one or more
files) -> JSON ``{"model", "results": [{"file", "top_k": [{"make", "probability"}],
"gradcam_png", "input_png"} | {"file", "error"}]}`` (PNG images as base64 data URLs).
"""

from __future__ import annotations

import base64
import html
import io
import threading

import numpy as np
from PIL import Image

from carjax import extras
from carjax import inference
from carjax.data import decode
from carjax import explain
from carjax import plotting

MAX_UPLOAD_BYTES = 64 * 1024 * 1024
TOP_K = 3


def _png_data_url(image_uint8: np.ndarray) -> str:
  buffer = io.BytesIO()
  Image.fromarray(image_uint8).save(buffer, "PNG")
  return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class DemoModel:
  """The predictor and its Grad-CAM, called one request at a time."""

  def __init__(self, predictor: inference.Predictor):
    self.predictor = predictor
    self.explainer = explain.PredictorGradCam(predictor)
    self._lock = threading.Lock()

  def describe(self) -> str:
    meta = self.predictor.checkpoint_meta or {}
    value = meta.get("best_value")
    score = (f", {meta.get('best_metric')} {value:.3f} on its held-out split"
             if isinstance(value, (int, float)) else "")
    return (f"{self.predictor.config.model.name}, {len(self.predictor.class_names)} makes"
            f"{score}")

  def predict(self, uploads: list[tuple[str, bytes]]) -> list[dict]:
    """One result per upload, in order: top-k makes and overlays, or the reason it failed."""
    results, images, slots = [], [], []
    for name, data in uploads:
      try:
        images.append(self.predictor.load_image(data, name=name))
        slots.append(len(results))
        results.append({"file": name})
      except decode.UnreadableImageError as e:
        results.append({"file": name, "error": f"not a readable image ({e.reason})"})
    if images:
      batch = np.stack(images)
      with self._lock:
        heatmaps, probs = self.explainer(batch)
      for slot, image, heatmap, p in zip(slots, batch, heatmaps, probs, strict=True):
        order = np.argsort(-p)[:TOP_K]
        results[slot].update(
            top_k=[{"make": self.predictor.class_names[i], "probability": float(p[i])}
                   for i in order],
            input_png=_png_data_url(image),
            gradcam_png=_png_data_url(plotting.overlay_heatmap(image, heatmap)))
    return results


def create_app(model: DemoModel):
  """The Flask application serving the page and the prediction API for `model`."""
  flask = extras.import_optional("flask", "demo", "The demo page")
  app = flask.Flask("carjax.demo")
  app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD_BYTES
  page = PAGE.replace("{{MODEL}}", html.escape(model.describe()))

  @app.get("/")
  def index():
    return flask.Response(page, mimetype="text/html")

  @app.post("/api/predict")
  def predict():
    files = flask.request.files.getlist("photos")
    if not files:
      return flask.jsonify(error="no photos in the request (multipart field 'photos')"), 400
    uploads = [(f.filename or "photo", f.read()) for f in files]
    return flask.jsonify(model=model.describe(), results=model.predict(uploads))

  @app.errorhandler(413)
  def too_large(_):
    return flask.jsonify(
        error=f"upload larger than {MAX_UPLOAD_BYTES // 2**20} MB; send fewer photos"), 413

  return app


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>carjax: which make is this car?</title>
<style>
 body { font: 15px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 980px; padding: 16px;
        color: #222; }
 h1 { font-size: 22px; margin: 4px 0; } .model { color: #666; margin-bottom: 12px; }
 #drop { display: block; border: 2px dashed #888; border-radius: 10px; padding: 28px; text-align: center;
         background: #fafafa; cursor: pointer; }
 #drop.over { background: #e8f0ff; border-color: #3366cc; }
 #status { margin: 10px 0; color: #555; min-height: 1.4em; }
 .card { display: flex; gap: 14px; align-items: flex-start; border: 1px solid #ddd;
         border-radius: 8px; padding: 10px; margin: 10px 0; }
 .card img { width: 160px; height: 160px; image-rendering: auto; border-radius: 4px; }
 .card figure { margin: 0; text-align: center; font-size: 12px; color: #666; }
 .preds { flex: 1; } .file { font-weight: 600; margin-bottom: 6px; word-break: break-all; }
 .row { display: flex; align-items: center; gap: 8px; margin: 4px 0; }
 .make { width: 130px; } .bar { flex: 1; background: #eee; height: 14px; border-radius: 7px; }
 .bar span { display: block; height: 100%; background: #3366cc; border-radius: 7px; }
 .prob { width: 56px; text-align: right; font-variant-numeric: tabular-nums; }
 .row.top .make { font-weight: 700; } .error { color: #b00020; }
 .note { color: #777; font-size: 12px; margin-top: 18px; }
</style></head>
<body>
<h1>Which make is this car?</h1>
<div class="model">Model: {{MODEL}}</div>
<label id="drop">Drop car photos here, or click to choose (one or several)
 <input id="photos" type="file" accept="image/*" multiple hidden></label>
<div id="status"></div>
<div id="results"></div>
<p class="note">Top-3 makes with their probabilities; Grad-CAM shows where in the photo the
evidence for the first make comes from (red = strong). Photos stay on this computer.</p>
<script>
const drop = document.getElementById("drop"), input = document.getElementById("photos");
const statusLine = document.getElementById("status"), out = document.getElementById("results");
function el(tag, cls, text) {
  const e = document.createElement(tag); if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text; return e;
}
function card(r) {
  const c = el("div", "card result"); c.dataset.file = r.file;
  const preds = el("div", "preds"); preds.appendChild(el("div", "file", r.file));
  if (r.error) { preds.appendChild(el("div", "error", r.error)); c.appendChild(preds); return c; }
  for (const [name, url] of [["photo", r.input_png], ["Grad-CAM", r.gradcam_png]]) {
    const f = el("figure"), img = el("img"); img.src = url; img.alt = name + " " + r.file;
    img.className = name === "photo" ? "photo" : "gradcam";
    f.appendChild(img); f.appendChild(el("figcaption", "", name)); c.appendChild(f);
  }
  r.top_k.forEach((p, i) => {
    const row = el("div", i === 0 ? "row top" : "row"), bar = el("div", "bar"), fill = el("span");
    fill.style.width = (100 * p.probability).toFixed(1) + "%"; bar.appendChild(fill);
    row.appendChild(el("span", "make", p.make)); row.appendChild(bar);
    row.appendChild(el("span", "prob", (100 * p.probability).toFixed(1) + "%"));
    preds.appendChild(row);
  });
  c.appendChild(preds); return c;
}
async function send(files) {
  if (!files.length) return;
  const form = new FormData(); for (const f of files) form.append("photos", f, f.name);
  statusLine.textContent = "Classifying " + files.length + " photo(s)...";
  try {
    const response = await fetch("api/predict", {method: "POST", body: form});
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    out.replaceChildren(...body.results.map(card));
    statusLine.textContent = body.results.length + " photo(s) classified.";
  } catch (err) { statusLine.textContent = "Error: " + err.message; }
}
input.addEventListener("change", () => send(input.files));
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => {
  e.preventDefault(); drop.classList.remove("over"); send(e.dataTransfer.files);
});
</script>
</body></html>
"""

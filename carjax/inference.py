"""A trained model ready to use: load a workdir's checkpoint, classify arrays or image files.

`Predictor` is what applications, `launch/predict.py`, `launch/evaluate.py`, the study
report and the exporter build on: it applies exactly the preprocessing of evaluation
(decode, resize with the run's resize mode, normalise with the model's mean/std).
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from carjax import models
from carjax.data import decode
from carjax.data import loading
from carjax import workdir as workdir_lib
from carjax.models import tta
from carjax.errors import ConfigError, MissingPathError
from carjax import checkpoint as ckpt


def restore_variables(workdir: str, which: str = ckpt.BEST, use_ema: bool | None = None):
  """(config, class_names, model, eval variables, checkpoint meta) of a workdir's checkpoint.

  `use_ema`: the weight average (None: when the run keeps one) or, False, the raw weights.
  A run trained with an auxiliary head is restored whole (checked against its model) and
  handed on without that head: everything that predicts outputs the makes only."""
  config = workdir_lib.load_run_config(workdir)
  keeps_ema = bool(config.train.ema_decay)
  if use_ema and not keeps_ema:
    raise ConfigError(f"{workdir} keeps no weight average (its config.train.ema_decay is 0): "
                      "there are only its raw weights to evaluate")
  class_names = workdir_lib.read_class_names(workdir)
  model = models.build_model(config.model, len(class_names),
                             len(workdir_lib.read_aux_class_names(workdir)))
  mngr = ckpt.manager(workdir, which)
  if mngr.latest_step() is None:
    raise MissingPathError(
        f"no '{which}' checkpoint in {ckpt.checkpoint_dir(workdir, which)}; "
        f"train first, or choose --checkpoint={'last' if which == 'best' else 'best'}")
  input_hw = decode.image_hw(config.data.image_size)
  abstract = jax.eval_shape(lambda r: models.init_variables(model, input_hw, r),
                            jax.random.key(0))
  abstract = {"params": abstract["params"], "batch_stats": abstract.get("batch_stats", {})}
  variables, meta = ckpt.restore_model_variables(
      mngr, abstract, use_ema=keeps_ema if use_ema is None else use_ema)
  model, variables = models.without_aux_head(model, variables)
  return config, class_names, model, variables, meta


class Predictor:
  """Classifies images with a trained carjax model."""

  def __init__(self, workdir: str, which: str = ckpt.BEST, flip_tta: bool | None = None,
               image_size=None, use_ema: bool | None = None):
    """`flip_tta`: average each image's prediction with its mirror's (None: as the run's
    `config.eval.flip_tta` says). `image_size`: S or (height, width) to classify at instead
    of the run's own evaluation size (`config.eval.image_size`, else its training size; the
    networks are convolutional: "train low, test high").
    `use_ema`: classify with the weight average (None: when the run keeps one) or the raw
    weights (False)."""
    (self.config, self.class_names, self.model, self.variables,
     self.checkpoint_meta) = restore_variables(workdir, which, use_ema)
    self.uses_ema = bool(self.config.train.ema_decay) if use_ema is None else use_ema
    self.configured_image_size = loading.eval_image_hw(self.config)  # (height, width)
    self.flip_tta = (bool(self.config.eval.get("flip_tta", False)) if flip_tta is None
                     else bool(flip_tta))
    self.image_size = (self.configured_image_size if image_size is None
                       else decode.image_hw(image_size))
    self.resize_mode = self.config.data.resize_mode
    self.input_spec = models.InputSpec.from_config(self.config.model)
    self._logits = jax.jit(
        self._logits_fn,
        compiler_options=models.compiler_options(self.config.model, jax.default_backend()))

  def _logits_fn(self, variables, images_uint8):
    apply = lambda pixels: models.apply_pixels(self.model, variables, pixels, self.input_spec,
                                               train=False).astype(jnp.float32)
    return tta.flip_averaged_logits(apply, images_uint8) if self.flip_tta else apply(images_uint8)

  def logits(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits [N, K] of uint8 images [N, S, S, 3] already at the model's input size.

    Batches are padded to `batch_size`, so one compiled program serves every call.
    """
    out = []
    for start in range(0, len(images), batch_size):
      chunk = images[start:start + batch_size]
      pad = batch_size - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
      out.append(np.asarray(self._logits(self.variables, chunk))[:batch_size - pad])
    if not out:
      return np.zeros((0, len(self.class_names)), np.float32)
    return np.concatenate(out)

  def load_image(self, path_or_bytes, name: str | None = None) -> np.ndarray:
    """Decodes one file as evaluation does; raises `UnreadableImageError` naming it."""
    image = decode.load_rgb(path_or_bytes, name=name)
    return decode.resize_to(image, self.image_size, self.resize_mode)

  def predict_files(self, paths: Sequence[str], top_k: int = 3, batch_size: int = 32):
    """([{'file', 'top_k': [(class name, probability), ...]}], [(file, reason)])."""
    images, kept, failures = [], [], []
    for path in paths:
      try:
        images.append(self.load_image(path, name=path))
        kept.append(path)
      except decode.UnreadableImageError as e:
        failures.append((path, e.reason))
    if not images:
      return [], failures
    probs = np.asarray(jax.nn.softmax(self.logits(np.stack(images), batch_size), axis=-1))
    k = min(top_k, len(self.class_names))
    results = []
    for path, p in zip(kept, probs):
      if not np.all(np.isfinite(p)):
        failures.append((path, "the model's output is not finite (NaN or infinite)"))
        continue
      order = np.argsort(-p)[:k]
      results.append({"file": path,
                      "top_k": [(self.class_names[i], float(p[i])) for i in order]})
    return results, failures


def expand_inputs(inputs: Iterable[str]) -> list[str]:
  """Image files named by paths, folders (searched recursively) and globs, sorted."""
  import glob  # pylint: disable=g-import-not-at-top
  files: list[str] = []
  for item in inputs:
    if os.path.isdir(item):
      for root, _, names in os.walk(item):
        files.extend(os.path.join(root, n) for n in names
                     if os.path.splitext(n)[1].lower() in decode_extensions())
    elif any(ch in item for ch in "*?["):
      matches = sorted(glob.glob(item, recursive=True))
      if not matches:
        raise MissingPathError(f"--input={item!r} matches no file")
      files.extend(m for m in matches if os.path.isfile(m))
    elif os.path.isfile(item):
      files.append(item)
    else:
      raise MissingPathError(f"--input={item!r}: no such file or folder")
  return sorted(dict.fromkeys(files))


def decode_extensions() -> frozenset[str]:
  from carjax.data import sources  # pylint: disable=g-import-not-at-top
  return frozenset(sources.IMAGE_EXTENSIONS)

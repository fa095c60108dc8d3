"""What the study's comparison table says about each evaluated model besides its metrics:
parameters, checkpoint size, training time and speed (as the run logged them), and inference
time per image measured here."""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np

from carjax.inference import Predictor
from carjax.study import training_figures
from carjax.study.runs import ModelRun, train_seconds_of
from carjax import checkpoint as ckpt
from carjax import workdir as workdir_lib

def count_parameters(variables) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(variables.get("params", {}))))


def directory_bytes(path: str) -> int:
  total = 0
  for root, _, files in os.walk(path, followlinks=True):
    total += sum(os.path.getsize(os.path.join(root, f)) for f in files
                 if os.path.isfile(os.path.join(root, f)))
  return total


def inference_ms_per_image(predictor: Predictor, batch_size: int, repeats: int) -> float:
  """Median wall time of one warm batch of `batch_size` images, per image, in ms."""
  height, width = predictor.image_size
  images = np.random.default_rng(0).integers(0, 256, (batch_size, height, width, 3), np.uint8)
  predictor.logits(images, batch_size)  # Compiles and warms up.
  times = []
  for _ in range(max(1, repeats)):
    start = time.perf_counter()
    predictor.logits(images, batch_size)
    times.append(time.perf_counter() - start)
  return float(np.median(times)) * 1000.0 / batch_size


@dataclasses.dataclass
class ModelFacts:
  """What the comparison table says about one evaluated model besides its metrics."""

  parameters: int
  checkpoint_bytes: int
  train_seconds: float | None
  train_images_per_s: float | None
  inference_ms_per_image: float


def measure(run: ModelRun, predictor: Predictor, report_config) -> ModelFacts:
  return ModelFacts(
      parameters=count_parameters(predictor.variables),
      checkpoint_bytes=directory_bytes(ckpt.checkpoint_dir(run.workdir, ckpt.BEST)),
      train_seconds=train_seconds_of(run.workdir, run.metrics),
      train_images_per_s=training_figures.median_train_images_per_s(
          workdir_lib.read_metric_lines(run.workdir)),
      inference_ms_per_image=inference_ms_per_image(
          predictor, report_config.inference_batch_size, report_config.inference_repeats))

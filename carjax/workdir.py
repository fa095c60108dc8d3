"""The run folder's layout: every file a training run leaves in its workdir, and its readers.

  config.json               the run's config (`load_run_config`)
  class_names.json          class index → make (`read_class_names`)
  aux_class_names.json      auxiliary class index → label, only for a run with an auxiliary
                            head (`config.data.aux_labels_csv`; `read_aux_class_names`)
  unreadable_files.json     images the data loader skipped, with the reason
  metrics.jsonl             one JSON line per logged step and split (`MetricWriter`,
                            `read_metric_lines`); TensorBoard events under tensorboard/
  checkpoints/<last|best>/  orbax checkpoints (`carjax.checkpoint`)
  eval_<which>_<target>[_<variant>]/  an evaluation's files (`eval_dir`)
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable

import ml_collections
import numpy as np

from carjax import checkpoint as ckpt
from carjax import jsonio
from carjax.errors import MissingPathError

CONFIG_FILE = "config.json"
CLASS_NAMES_FILE = "class_names.json"
AUX_CLASS_NAMES_FILE = "aux_class_names.json"
UNREADABLE_FILES = "unreadable_files.json"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
# The files of an evaluation folder (`eval_dir`), written by `carjax.evaluation`.
EVAL_METRICS = "metrics.json"
EVAL_PER_CLASS = "per_class.csv"
EVAL_CONFUSION = "confusion_matrix.csv"
EVAL_CONFUSION_FIGURE = "confusion_matrix.png"
EVAL_PREDICTIONS = "predictions.csv"
# What a finished evaluation folder must hold to be reused.
EVAL_FILES = (EVAL_METRICS, EVAL_PER_CLASS, EVAL_CONFUSION, EVAL_PREDICTIONS)


def eval_dir(workdir: str, which: str, target: str, variant: str = "") -> str:
  """The folder an evaluation of checkpoint `which` on split/folder `target` writes into;
  `variant` ('flip', 'noflip', '<h>x<w>', or both joined by '_') marks an evaluation made
  otherwise than the run's config says (test-time flip, input size)."""
  return os.path.join(workdir, f"eval_{which}_{target}" + (f"_{variant}" if variant else ""))


def read_eval_metrics(eval_folder: str) -> dict[str, Any]:
  """The summary (`metrics.json`) of the evaluation written into `eval_folder`."""
  with open(os.path.join(eval_folder, EVAL_METRICS)) as f:
    return json.load(f)


def write_run_files(config: ml_collections.ConfigDict, workdir: str, class_names,
                    failures: Iterable[dict[str, str]], aux_class_names=()) -> None:
  """config.json, class_names.json, aux_class_names.json (only with auxiliary classes; a
  stale one is removed, since its presence sizes the restored model) and the list of
  unreadable files ({'split', 'file', 'reason'} each), in the workdir."""
  with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  with open(os.path.join(workdir, CLASS_NAMES_FILE), "w") as f:
    json.dump(list(class_names), f, indent=2)
  aux_path = os.path.join(workdir, AUX_CLASS_NAMES_FILE)
  if aux_class_names:
    with open(aux_path, "w") as f:
      json.dump(list(aux_class_names), f, indent=2)
  elif os.path.exists(aux_path):
    os.remove(aux_path)
  with open(os.path.join(workdir, UNREADABLE_FILES), "w") as f:
    json.dump(list(failures), f, indent=2)


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir's run was trained with."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise MissingPathError(f"{path} not found: is {workdir!r} a carjax training workdir?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def read_class_names(workdir: str) -> tuple[str, ...]:
  """The run's class names in label order."""
  with open(os.path.join(workdir, CLASS_NAMES_FILE)) as f:
    return tuple(json.load(f))


def read_aux_class_names(workdir: str) -> tuple[str, ...]:
  """The run's auxiliary class names in label order; () for a run without an auxiliary head."""
  path = os.path.join(workdir, AUX_CLASS_NAMES_FILE)
  if not os.path.exists(path):
    return ()
  with open(path) as f:
    return tuple(json.load(f))


class MetricWriter:
  """Appends metrics to `metrics.jsonl` and to TensorBoard event files under `tensorboard/`."""

  def __init__(self, workdir: str):
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._jsonl = open(os.path.join(workdir, METRICS_FILE), "a")
    self._tb = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR))

  def write(self, step: int, split: str, values: dict[str, Any]) -> None:
    scalars = {k: float(v) for k, v in values.items() if isinstance(v, (int, float, np.number))}
    self._jsonl.write(jsonio.dumps({"step": int(step), "split": split, **scalars}) + "\n")
    self._jsonl.flush()
    for k, v in scalars.items():
      self._tb.add_scalar(f"{split}/{k}", v, step)

  def close(self) -> None:
    self._jsonl.close()
    self._tb.close()


def read_metric_lines(workdir: str) -> list[dict]:
  """Every line of `metrics.jsonl` in file order ([] if the run has none yet)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  lines = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line:
        try:
          lines.append(json.loads(line))
        except json.JSONDecodeError:
          pass  # A line cut short by a killed run; the rest still counts.
  return lines


def run_progress(workdir: str) -> dict[str, Any] | None:
  """{'epoch', 'num_epochs', 'step', 'finished', 'train_seconds', 'config'} of a workdir's
  run, or None when it holds no checkpoint.

  Finished means the last checkpoint is at the run's final epoch *and* carries that epoch's
  evaluation: a run interrupted inside its last epoch saves a checkpoint without one.
  """
  if not (os.path.exists(os.path.join(workdir, CONFIG_FILE)) and
          os.path.isdir(ckpt.checkpoint_dir(workdir, ckpt.LAST))):
    return None
  meta = ckpt.read_meta(workdir, ckpt.LAST)
  if meta is None:
    return None
  config = load_run_config(workdir)
  num_epochs = int(config.train.num_epochs)
  epoch = int(meta.get("epoch", 0))
  return {"epoch": epoch, "num_epochs": num_epochs, "step": int(meta.get("step", 0)),
          "finished": epoch >= num_epochs and bool(meta.get("eval")),
          "train_seconds": meta.get("train_seconds"), "config": config}

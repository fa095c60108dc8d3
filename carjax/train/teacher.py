"""A finished run as a teacher: its logits for every training image of a student run.

With `config.train.teacher_workdir`, the student learns from the teacher's softened class
probabilities as well as from the labels (knowledge distillation; `steps.make_per_example_loss`
holds the loss). The teacher classifies each training photo once, whole, at its own
evaluation size, before training starts ("offline" distillation: the student's random crops
and flips see the soft labels of the whole photo). The logits are kept in the student's
workdir (`teacher_logits.npz`), so a resumed run does not classify the photos again, and are
computed anew when the teacher's best checkpoint or the training photos changed.

A student so taught is not trained from scratch: the study shows it as an extra row.

The teacher must have been trained on the student's training photos and nothing else:
the same data folder, the same makes, and the same dev split carved the same way. A teacher
that trained on the student's dev or test photos would pass their labels on to the
student, so any other teacher is refused, naming the option that differs.
"""

from __future__ import annotations

import os
from typing import Sequence

from absl import logging
import ml_collections
import numpy as np

from carjax import checkpoint as ckpt
from carjax import workdir as workdir_lib
from carjax.data import cache as cache_lib
from carjax.data import sources
from carjax.errors import ConfigError, DataError
from carjax.inference import Predictor

LOGITS_FILE = "teacher_logits.npz"
# The teacher's data options that decide which photos it trained on.
_SAME_PHOTOS = ("train_split", "eval_split", "dev_fraction", "split_seed", "val_fraction",
                "test_fraction")


def check_teacher(config: ml_collections.ConfigDict, class_names: Sequence[str]) -> None:
  """Refuses (ConfigError) a teacher that is not a finished run of the same makes, trained
  on the student's own training photos; before any image is decoded."""
  teacher = os.path.expanduser(config.train.teacher_workdir)
  if ckpt.read_meta(teacher, ckpt.BEST) is None:
    raise ConfigError(f"config.train.teacher_workdir={teacher!r} holds no best checkpoint: "
                      "name a finished run")
  if tuple(workdir_lib.read_class_names(teacher)) != tuple(class_names):
    raise ConfigError(f"config.train.teacher_workdir={teacher!r} classifies other makes "
                      f"({', '.join(workdir_lib.read_class_names(teacher))}) than this run's "
                      f"data ({', '.join(class_names)})")
  taught, student = workdir_lib.load_run_config(teacher).data, config.data
  if not sources.same_source(taught.source, student.source):
    raise ConfigError(f"config.train.teacher_workdir={teacher!r} trained on "
                      f"{taught.source!r}, not on this run's {student.source!r}")
  for name in _SAME_PHOTOS:
    if taught.get(name) != student.get(name):
      raise ConfigError(
          f"config.train.teacher_workdir={teacher!r} trained with data.{name}="
          f"{taught.get(name)!r}, this run has {student.get(name)!r}: the teacher may have "
          "seen this run's dev or test photos, and would pass their labels on")


def _cached(path: str, names: Sequence[str], teacher_step) -> np.ndarray | None:
  if not os.path.exists(path):
    return None
  with np.load(path, allow_pickle=False) as saved:
    if (list(saved["names"]) == list(names)
        and int(saved["teacher_step"]) == int(teacher_step)):
      return saved["logits"]
  logging.info("%s belongs to another teacher checkpoint or other photos: classifying the "
               "training photos again.", path)
  return None


def training_logits(config: ml_collections.ConfigDict, workdir: str, source,
                    names: Sequence[str]) -> np.ndarray:
  """float32 [N, K]: the teacher's logits for the training images `names` (a decoded
  split's names, in its order), from the workdir's `teacher_logits.npz` when it holds these
  photos and the teacher's current best checkpoint, else computed and saved there."""
  teacher = os.path.expanduser(config.train.teacher_workdir)
  # The checkpoint's step, not its weights: a resumed run reuses the saved logits.
  teacher_step = (ckpt.read_meta(teacher, ckpt.BEST) or {}).get("step", -1)
  path = os.path.join(workdir, LOGITS_FILE)
  logits = _cached(path, names, teacher_step)
  if logits is not None:
    return logits
  predictor = Predictor(teacher, ckpt.BEST)
  data_cfg = config.data
  part = cache_lib.load_split(
      source, data_cfg.train_split, image_size=predictor.image_size,
      resize_mode=predictor.resize_mode,
      cache_dir=os.path.expanduser(data_cfg.cache_dir) if data_cfg.cache_dir else None,
      num_workers=data_cfg.num_workers or None, progress=True, mmap=True)
  row_of = {name: i for i, name in enumerate(part.names)}
  missing = [n for n in names if n not in row_of]
  if missing:
    raise DataError(f"the teacher could not read the training image {missing[0]} "
                    f"({len(missing)} such) that this run trains on")
  logging.info("Teacher %s classifies the %d training photos at %dx%d.", teacher, len(names),
               *predictor.image_size)
  all_logits = predictor.logits(part.images, batch_size=config.eval.batch_size)
  logits = all_logits[[row_of[n] for n in names]].astype(np.float32)
  if not np.all(np.isfinite(logits)):
    raise DataError(f"the teacher {teacher} gave non-finite logits")
  tmp = path + ".tmp.npz"
  np.savez(tmp, names=np.array(list(names)), logits=logits,
           teacher_step=np.array(teacher_step), teacher=np.array(teacher))
  os.replace(tmp, path)
  return logits

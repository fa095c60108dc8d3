"""Converted weights on disk: an orbax checkpoint plus a conventions JSON.

Layout of a converted-weights directory::

  <directory>/variables/        orbax StandardCheckpointer: {'params', 'batch_stats'}
  <directory>/conventions.json  how to build and feed the model (see below)

Conventions keys: ``model`` ('efficientnet'), ``variant``, ``num_classes``,
``padding``, ``bn_epsilon``, ``bn_momentum``, ``activation``, ``se``,
``resolution``, ``input_mean`` / ``input_std`` (per RGB channel, 0..255 scale:
feed ``(pixels - mean) / std``), ``class_names`` (list or None), ``source``,
``source_file``, ``source_sha256``, and source-specific notes.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

CONVENTIONS_FILE = 'conventions.json'
VARIABLES_DIR = 'variables'


def sha256_of(path: str | os.PathLike) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def save_converted(directory: str | os.PathLike, variables: Any,
                   conventions: dict[str, Any]) -> None:
  """Writes variables (orbax) and conventions (JSON); overwrites a previous save."""
  directory = os.path.abspath(os.fspath(directory))
  os.makedirs(directory, exist_ok=True)
  variables = jax.tree.map(np.asarray, variables)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.join(directory, VARIABLES_DIR), variables,
                      force=True)
  with open(os.path.join(directory, CONVENTIONS_FILE), 'w') as f:
    json.dump(conventions, f, indent=1)
    f.write('\n')


def load_converted(directory: str | os.PathLike) -> tuple[dict, dict[str, Any]]:
  """Reads what `save_converted` wrote: (variables of numpy arrays, conventions)."""
  directory = os.path.abspath(os.fspath(directory))
  with open(os.path.join(directory, CONVENTIONS_FILE)) as f:
    conventions = json.load(f)
  with ocp.StandardCheckpointer() as checkpointer:
    variables = checkpointer.restore(os.path.join(directory, VARIABLES_DIR))
  return jax.tree.map(np.asarray, variables), conventions

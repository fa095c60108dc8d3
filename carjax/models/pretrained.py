"""Starting a model from converted pretrained weights (read by `checkpoint.load_converted`).

`check_conventions` refuses weights made for another architecture or input normalisation.

`merge_pretrained` takes a freshly initialised model's variables and replaces
every leaf by the pretrained one, except the subtrees named in `reinit` (by
default the classifier ``head``, whose shape depends on the number of
classes). It is strict: any leaf missing on either side, or of a different
shape, fails with its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax
import jax.numpy as jnp
import numpy as np



class PretrainedMismatchError(ValueError):
  """Pretrained variables do not fit the model; the message lists the paths."""


def _in_reinit(path: tuple[str, ...], reinit: Sequence[str]) -> bool:
  # A name matches a path element (e.g. 'head' matches params/head/kernel and
  # batch_stats/head/...); 'a/b' matches consecutive elements a, b.
  joined = '/' + '/'.join(path) + '/'
  return any(f'/{name.strip("/")}/' in joined for name in reinit)


def merge_pretrained(init_variables: Any, pretrained_variables: Any, *,
                     reinit: Sequence[str] = ('head',)) -> dict:
  """Variables with every leaf from `pretrained_variables` except `reinit`.

  Args:
    init_variables: the model's freshly initialised variables (any of its
      collections: 'params', 'batch_stats', ...).
    pretrained_variables: converted variables of the same architecture.
    reinit: names of subtrees to keep from `init_variables` (matched against
      path elements, e.g. 'head' or 'blocks_15/project_bn'); their pretrained
      counterparts may be absent or differently shaped.

  Returns:
    A new nested dict of jax arrays in the dtypes of `init_variables`.

  Raises:
    PretrainedMismatchError: naming every missing, extra or mismatched path.
  """
  init_flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(init_variables))
  pre_flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(pretrained_variables))
  merged, missing, mismatched = {}, [], []
  for path, init_leaf in init_flat.items():
    if _in_reinit(path, reinit):
      merged[path] = jnp.asarray(init_leaf)
      continue
    name = '/'.join(path)
    if path not in pre_flat:
      missing.append(name)
      continue
    leaf = pre_flat[path]
    if tuple(np.shape(leaf)) != tuple(np.shape(init_leaf)):
      mismatched.append(f'{name}: pretrained {tuple(np.shape(leaf))}, '
                        f'model {tuple(np.shape(init_leaf))}')
      continue
    merged[path] = jnp.asarray(leaf, dtype=jnp.result_type(init_leaf))
  extra = sorted('/'.join(path) for path in pre_flat
                 if path not in init_flat and not _in_reinit(path, reinit))
  problems = []
  if missing:
    problems.append('missing in pretrained: ' + ', '.join(missing))
  if mismatched:
    problems.append('shape mismatch: ' + '; '.join(mismatched))
  if extra:
    problems.append('not in the model: ' + ', '.join(extra))
  if problems:
    raise PretrainedMismatchError(
        'pretrained variables do not fit the model (reinit='
        f'{tuple(reinit)}):\n  ' + '\n  '.join(problems))
  return flax.traverse_util.unflatten_dict(merged)


def check_conventions(conventions: dict, model_config, model) -> None:
  """Fails when converted weights were made for another architecture or normalisation."""
  problems = []
  if conventions.get("variant") != model_config.get("variant"):
    problems.append(f"variant: weights {conventions.get('variant')!r}, "
                    f"config.model.variant {model_config.get('variant')!r}")
  for key in ("padding", "bn_epsilon", "activation", "se"):
    if key in conventions and getattr(model, key, conventions[key]) != conventions[key]:
      problems.append(f"{key}: weights {conventions[key]!r}, model {getattr(model, key)!r}")
  for key in ("input_mean", "input_std"):
    if key in conventions and not np.allclose(conventions[key], model_config[key]):
      problems.append(f"{key}: weights expect {conventions[key]}, "
                      f"config.model.{key} is {tuple(model_config[key])}")
  if problems:
    raise ValueError(f"config.model.pretrained={model_config.pretrained!r} does not match the "
                     "model config:\n  " + "\n  ".join(problems))

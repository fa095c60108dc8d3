"""Fills a model's variables from a flat dict of source tensors, strictly.

A conversion is a *plan*: one `Assignment` per target leaf, naming the source
tensor and how to lay it out. `assemble` applies it and fails, listing every
problem at once, when a source tensor is missing, a shape differs after the
layout change, a target leaf is left unfilled or a source tensor is unused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

TargetPath = tuple[str, ...]  # ('params', 'blocks_0', 'depthwise_conv', 'kernel')


class ConversionError(ValueError):
  """The source does not match the target model; the message lists how."""


@dataclasses.dataclass(frozen=True)
class Assignment:
  source: str
  target: TargetPath
  layout: Callable[[np.ndarray], np.ndarray] = lambda array: array
  layout_name: str = 'as is'


# Layout changes from PyTorch to flax.
def torch_conv(array: np.ndarray) -> np.ndarray:
  """(out, in, kh, kw) -> (kh, kw, in, out); also depthwise (C, 1, kh, kw) ->
  (kh, kw, 1, C), the layout of nn.Conv with feature_group_count=C."""
  return np.transpose(array, (2, 3, 1, 0))


def torch_linear(array: np.ndarray) -> np.ndarray:
  """(out, in) -> (in, out)."""
  return np.transpose(array)


def keras_depthwise(array: np.ndarray) -> np.ndarray:
  """Keras DepthwiseConv2D (kh, kw, C, 1) -> (kh, kw, 1, C)."""
  return np.transpose(array, (0, 1, 3, 2))


def target_shapes(variables) -> dict[TargetPath, tuple[tuple[int, ...], np.dtype]]:
  """Flat path -> (shape, dtype) of a variables pytree (arrays or ShapeDtypeStructs)."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
  return {path: (tuple(leaf.shape), np.dtype(leaf.dtype)) for path, leaf in flat.items()}


def _listing(title: str, items: list[str], limit: int = 40) -> str:
  shown = '\n  '.join(items[:limit])
  more = f'\n  ... and {len(items) - limit} more' if len(items) > limit else ''
  return f'{title} ({len(items)}):\n  {shown}{more}'


def assemble(
    plan: Iterable[Assignment],
    tensors: Mapping[str, np.ndarray],
    targets: Mapping[TargetPath, tuple[tuple[int, ...], np.dtype]],
    *,
    ignored: Callable[[str], bool] = lambda name: False,
    consumed: Iterable[str] = (),
    description: str = 'source',
) -> dict:
  """Builds the variables dict, or raises ConversionError listing every problem.

  Args:
    plan: one assignment per target leaf.
    tensors: source name -> array.
    targets: flat target path -> (shape, dtype), see `target_shapes`.
    ignored: source names that are expected to stay unused (e.g. PyTorch's
      ``num_batches_tracked``).
    consumed: source names used outside the plan (e.g. Keras' input
      normalisation, recorded as a convention).
    description: names the source in error messages.

  Returns:
    Nested {'params': ..., 'batch_stats': ...} of numpy arrays in the target
    dtypes.
  """
  filled: dict[TargetPath, np.ndarray] = {}
  planned: set[TargetPath] = set()  # targets with an assignment, even a failed one
  used = set(consumed)
  missing, mismatched, unknown = [], [], []
  for assignment in plan:
    target = '/'.join(assignment.target)
    if assignment.target not in targets:
      unknown.append(f'{assignment.source} -> {target}')
      continue
    planned.add(assignment.target)
    if assignment.source not in tensors:
      missing.append(f'{assignment.source} (for {target})')
      continue
    used.add(assignment.source)
    source = np.asarray(tensors[assignment.source])
    array = assignment.layout(source)
    shape, dtype = targets[assignment.target]
    if tuple(array.shape) != shape:
      mismatched.append(
          f'{assignment.source}: {tuple(source.shape)} '
          f'(layout {assignment.layout_name}: {tuple(array.shape)}) '
          f'but {target} is {shape}')
      continue
    filled[assignment.target] = np.asarray(array, dtype=dtype)

  unfilled = sorted('/'.join(path) for path in targets if path not in planned)
  unused = sorted(name for name in tensors
                  if name not in used and not ignored(name))

  problems = []
  if missing:
    problems.append(_listing('missing source tensors', missing))
  if mismatched:
    problems.append(_listing('shape mismatches', mismatched))
  if unfilled:
    problems.append(_listing('target variables left unfilled', unfilled))
  if unused:
    problems.append(_listing(f'unused {description} tensors', unused))
  if unknown:
    problems.append(_listing('assignments to variables the model lacks', unknown))
  if problems:
    raise ConversionError(f'cannot convert {description}:\n' + '\n'.join(problems))
  return flax.traverse_util.unflatten_dict(filled)


def abstract_variables(model, resolution: int = 64):
  """The model's variables as ShapeDtypeStructs (no compute, no RNG draws)."""
  dummy = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
  return jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), dummy)

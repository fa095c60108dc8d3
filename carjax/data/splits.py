"""Split names and deterministic, stratified train/val/test splitting.

The canonical split names are `TRAIN`, `VAL` and `TEST`; folder and dataset split names such
as "validation" or "testing" are aliases of them (`canonical_split`, `resolve_split`).
`stratified_split` divides items into the three splits with the same fractions within each
stratum (class), seeded per stratum by `seeded_rng`.
"""

from __future__ import annotations

import hashlib
from typing import Hashable, Iterable, Sequence, TypeVar

import numpy as np

from carjax.errors import ConfigError, DataError

TRAIN, VAL, TEST = "train", "val", "test"
# Folder/split names recognised as splits, and the canonical name they mean.
SPLIT_ALIASES = {
    "train": TRAIN, "training": TRAIN,
    "val": VAL, "valid": VAL, "validation": VAL,
    "test": TEST, "testing": TEST,
}
_SPLIT_ORDER = {TRAIN: 0, VAL: 1, TEST: 2}

_KeyT = TypeVar("_KeyT")


def seeded_rng(seed: int, stratum: str) -> np.random.Generator:
  """A generator that depends only on (seed, stratum).

  Seeding each class on its own (rather than one generator walking all
  classes) means adding or removing images of one class never reshuffles
  another class's split. Python's hash() is salted per process, so a
  cryptographic hash gives the stable seed instead.
  """
  digest = hashlib.sha256(f"{seed}\0{stratum}".encode()).digest()
  return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def check_split_fractions(val_fraction: float, test_fraction: float) -> None:
  """Raises ValueError unless both fractions are in [0, 1) and leave a train."""
  for option, value in (("val_fraction", val_fraction),
                        ("test_fraction", test_fraction)):
    if not 0.0 <= value < 1.0:
      raise ConfigError(f"{option} must be in [0, 1), got {value}.")
  if val_fraction + test_fraction >= 1.0:
    raise ConfigError(
        f"val_fraction + test_fraction must be below 1 so that a train split "
        f"remains; got {val_fraction} + {test_fraction}.")


def stratified_split(
    keys_by_stratum: dict[Hashable, Sequence[_KeyT]], *,
    val_fraction: float, test_fraction: float, seed: int,
) -> dict[str, list[_KeyT]]:
  """Splits items into train/val/test, the same fractions within each stratum.

  Deterministic: the result depends only on the items of each stratum (in
  sorted order), the fractions and the seed. Within a stratum of n items,
  round(n * test_fraction) go to test and round(n * val_fraction) to val, but
  at least one item always stays in train.

  Args:
    keys_by_stratum: e.g. {class name: [file names]}; items must be sortable.
    val_fraction: share of each stratum for "val".
    test_fraction: share of each stratum for "test".
    seed: the split seed.

  Returns:
    {"train": [...], "val": [...], "test": [...]}, each list sorted.
  """
  check_split_fractions(val_fraction, test_fraction)
  result: dict[str, list[_KeyT]] = {TRAIN: [], VAL: [], TEST: []}
  for stratum in sorted(keys_by_stratum, key=str):
    keys = sorted(keys_by_stratum[stratum])
    n = len(keys)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    while n > 0 and n_test + n_val >= n:
      # Tiny strata: keep one item for training, taking from the larger share.
      if n_test >= n_val and n_test > 0:
        n_test -= 1
      else:
        n_val -= 1
    order = seeded_rng(seed, str(stratum)).permutation(n)
    shuffled = [keys[i] for i in order]
    result[TEST].extend(shuffled[:n_test])
    result[VAL].extend(shuffled[n_test:n_test + n_val])
    result[TRAIN].extend(shuffled[n_test + n_val:])
  return {split: sorted(items) for split, items in result.items()}


def canonical_split(split: str) -> str:
  return SPLIT_ALIASES.get(split.lower(), split)


def ordered_splits(splits: Iterable[str]) -> tuple[str, ...]:
  """train, val, test first, then any other split names alphabetically."""
  return tuple(sorted(splits, key=lambda s: (_SPLIT_ORDER.get(s, 3), s)))


def resolve_split(split: str, available: Sequence[str], where: str) -> str:
  """Maps a requested split name (or alias, e.g. 'validation') to one we have."""
  if split in available:
    return split
  canonical = canonical_split(split)
  for candidate in available:
    if canonical_split(candidate) == canonical:
      return candidate
  raise DataError(
      f"Unknown split {split!r} for {where}; available splits: "
      f"{', '.join(available) or '(none)'}.")

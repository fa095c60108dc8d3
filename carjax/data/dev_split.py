"""A development split carved from `train`, so that choosing never touches the test figure.

With `config.data.dev_fraction = f > 0`, a seeded, stratified share f of every class of the
train split becomes the split "dev": training never sees it, the per-epoch evaluations (and
so the `best` checkpoint, and any recipe comparison) are made on it, and `config.data.
eval_split` (e.g. val) is scored once, by the final evaluation, as the test figure. The carve
depends only on the train split's files and (`split_seed`, f), like `stratified_split`.
"""

from __future__ import annotations

from typing import Any

from carjax.data import splits
from carjax.errors import ConfigError

DEV = "dev"


class DevCarvedSource:
  """`base` with its train split divided into "train" (the rest) and "dev" (share f)."""

  def __init__(self, base: Any, *, dev_fraction: float, seed: int, train_split: str):
    if not 0.0 < dev_fraction < 1.0:
      raise ConfigError(f"config.data.dev_fraction must be in (0, 1), got {dev_fraction}")
    self.base = base
    self.dev_fraction, self.seed = float(dev_fraction), int(seed)
    self.class_names = tuple(base.class_names)
    self.train_split = splits.resolve_split(train_split, base.splits, repr(base))
    if any(splits.canonical_split(s) == DEV for s in base.splits):
      raise ConfigError(f"{base!r} already has a split named {DEV!r}; set "
                        "config.data.dev_fraction=0 to select on it as config.data.eval_split")
    by_class: dict[int, list[str]] = {}
    records = {r.name: r for r in base.records(self.train_split)}
    for record in records.values():
      by_class.setdefault(record.label, []).append(record.name)
    parts = splits.stratified_split(by_class, val_fraction=self.dev_fraction,
                                     test_fraction=0.0, seed=self.seed)
    self._records = {self.train_split: [records[n] for n in parts[splits.TRAIN]],
                     DEV: [records[n] for n in parts[splits.VAL]]}

  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(self.base.splits) + (DEV,)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def identity(self) -> str:
    """The base's identity plus the carve: the cache keeps the two trains apart."""
    return f"{self.base.identity}:dev={self.dev_fraction}@{self.seed}"

  @property
  def has_split_folders(self) -> bool:
    return bool(getattr(self.base, "has_split_folders", False))

  @property
  def root(self):
    return getattr(self.base, "root", None)

  def records(self, split: str):
    if split == DEV or splits.canonical_split(split) == DEV:
      return list(self._records[DEV])
    if splits.resolve_split(split, self.base.splits, repr(self.base)) == self.train_split:
      return list(self._records[self.train_split])
    return self.base.records(split)

  def __repr__(self) -> str:
    return (f"DevCarvedSource({self.base!r}, {len(self._records[DEV])} of "
            f"{self.train_split} as {DEV})")

"""Statistics of raw timings: rates, medians and spreads, ratios between stacks.

Pure functions on plain lists, unit-tested on fixed inputs (tests/test_benchmarks_stats.py).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence


def rates(seconds: Iterable[float], images_per_sample: int) -> list[float]:
  """Images/s of each timed sample that processed `images_per_sample` images."""
  out = []
  for s in seconds:
    if s <= 0:
      raise ValueError(f"a timing must be positive, got {s}")
    out.append(images_per_sample / s)
  return out


def quantile(values: Sequence[float], q: float) -> float:
  """Linear-interpolation quantile (numpy's default 'linear' method), q in [0, 1]."""
  if not values:
    raise ValueError("quantile of an empty list")
  if not 0.0 <= q <= 1.0:
    raise ValueError(f"q must be in [0, 1], got {q}")
  ordered = sorted(values)
  position = q * (len(ordered) - 1)
  low = math.floor(position)
  high = min(low + 1, len(ordered) - 1)
  return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(values: Sequence[float]) -> dict:
  """{'n', 'median', 'min', 'max', 'q1', 'q3', 'iqr', 'mean', 'spread_pct'}; None if empty.

  `spread_pct` is (max - min) / median in percent.
  """
  values = [float(v) for v in values]
  if not values:
    return None
  median = quantile(values, 0.5)
  q1, q3 = quantile(values, 0.25), quantile(values, 0.75)
  return {
      "n": len(values),
      "median": median,
      "min": min(values),
      "max": max(values),
      "q1": q1,
      "q3": q3,
      "iqr": q3 - q1,
      "mean": sum(values) / len(values),
      "spread_pct": 100.0 * (max(values) - min(values)) / median if median else None,
  }


def ratio(numerator: dict | None, denominator: dict | None) -> float | None:
  """median(numerator) / median(denominator) of two `summarize` results (None if missing)."""
  if not numerator or not denominator or not denominator.get("median"):
    return None
  return numerator["median"] / denominator["median"]


def ratio_range(numerator: dict | None, denominator: dict | None) -> tuple | None:
  """The ratio's pessimistic and optimistic ends: (min/max, max/min)."""
  if not numerator or not denominator or not denominator.get("min"):
    return None
  return (numerator["min"] / denominator["max"], numerator["max"] / denominator["min"])


def format_rate(summary: dict | None, digits: int | None = None) -> str:
  """'14.9 (13.2–15.8)': median and min–max, or '—'."""
  if not summary:
    return "—"
  fmt = _formatter(summary["median"], digits)
  return f"{fmt(summary['median'])} ({fmt(summary['min'])}–{fmt(summary['max'])})"


def _formatter(value: float, digits: int | None):
  if digits is None:
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
  return lambda v: f"{v:.{digits}f}"

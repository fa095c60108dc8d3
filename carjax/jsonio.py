"""Strict JSON: NaN and infinities become null, never the invalid tokens `NaN`/`Infinity`.

Python's `json` writes `NaN` by default, which no other JSON reader accepts; every JSON file
and JSON output of carjax goes through `dumps`/`dump` here instead.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def finite_or_none(value: Any) -> Any:
  """`value` with every non-finite float (anywhere inside dicts, lists, tuples) as None."""
  if isinstance(value, dict):
    return {k: finite_or_none(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [finite_or_none(v) for v in value]
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.bool_):
    return bool(value)
  return value


def dumps(value: Any, **kwargs) -> str:
  return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)


def dump(value: Any, f, **kwargs) -> None:
  json.dump(finite_or_none(value), f, allow_nan=False, **kwargs)

"""Renders predictions as a table, JSON or CSV (unreadable files are reported, not dropped)."""

from __future__ import annotations

import csv
import io
import sys

from carjax import jsonio


def render(results, failures, fmt: str) -> str:
  """`results` from `Predictor.predict_files`; failures as (file, reason)."""
  for path, reason in failures:
    print(f"unreadable image {path}: {reason}", file=sys.stderr)
  if fmt == "json":
    payload = {"predictions": [
        {"file": r["file"], "top_k": [{"make": m, "probability": round(p, 6)}
                                      for m, p in r["top_k"]]} for r in results],
               "unreadable": [{"file": f, "reason": why} for f, why in failures]}
    return jsonio.dumps(payload, indent=2) + "\n"
  if fmt == "csv":
    out = io.StringIO()
    w = csv.writer(out)
    k = max((len(r["top_k"]) for r in results), default=0)
    w.writerow(["file"] + [c for i in range(1, k + 1) for c in (f"make_{i}", f"prob_{i}")])
    for r in results:
      w.writerow([r["file"]] + [c for m, p in r["top_k"] for c in (m, f"{p:.4f}")])
    return out.getvalue()
  if fmt != "table":
    raise ValueError(f"--format must be table, json or csv, got {fmt!r}")
  lines = []
  width = max((len(r["file"]) for r in results), default=4)
  for r in results:
    guesses = "  ".join(f"{m} {p:6.1%}" for m, p in r["top_k"])
    lines.append(f"{r['file']:<{width}}  {guesses}")
  return "\n".join(lines) + ("\n" if lines else "")

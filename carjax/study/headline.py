"""The study's answer in numbers: each model's test figures with 95 % intervals, aggregated
over seeds, beside the Keras study's own figures, and the conclusions they support.

Pure functions of the runs' `metrics.json` / `predictions.csv` contents, so the report and
the tests read the same arithmetic.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from carjax import metrics as metrics_lib
from carjax.study import comparison

# (metrics.json key, title) of the figures given with intervals.
INTERVAL_METRICS = (("accuracy", "accuracy"), ("weighted_precision", "weighted precision"),
                    ("macro_f1", "macro F1"))


def interval_of(metrics: Mapping[str, Any], key: str) -> tuple[float, float] | None:
  """The 95 % interval of `key` in a metrics.json; for accuracy without a stored one (older
  evaluations), the Wilson interval from the count."""
  stored = metrics.get(f"{key}_ci95")
  if stored is not None:
    return float(stored[0]), float(stored[1])
  if key == "accuracy" and metrics.get("count"):
    n = int(metrics["count"])
    return metrics_lib.wilson_interval(round(metrics["accuracy"] * n), n)
  return None


def with_interval(metrics: Mapping[str, Any], key: str, digits: int = 3) -> str:
  """'0.838 [0.811, 0.862]' (or just the figure when no interval is known)."""
  value = metrics.get(key)
  if value is None:
    return "–"
  ci = interval_of(metrics, key)
  text = f"{float(value):.{digits}f}"
  return text if ci is None else f"{text} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


@dataclasses.dataclass
class SeedSummary:
  """One model's figure over its seeds: mean, lowest and highest seed, how many."""

  mean: float
  low: float
  high: float
  seeds: int

  def __str__(self) -> str:
    if self.seeds == 1:
      return f"{self.mean:.3f} (1 seed)"
    return f"{self.mean:.3f} ({self.low:.3f}–{self.high:.3f}, {self.seeds} seeds)"


def over_seeds(per_seed_metrics: Sequence[Mapping[str, Any]], key: str) -> SeedSummary | None:
  values = [float(m[key]) for m in per_seed_metrics if m.get(key) is not None]
  if not values:
    return None
  return SeedSummary(float(np.mean(values)), min(values), max(values), len(values))


def paired_test(eval_dir_a: str, eval_dir_b: str) -> tuple[int, float] | None:
  """(images both were scored on, McNemar p-value) of two evaluations of the same split."""
  a, b = (comparison.read_evaluation(d).correct_by_file for d in (eval_dir_a, eval_dir_b))
  shared = sorted(set(a) & set(b))
  if not shared:
    return None
  return len(shared), metrics_lib.mcnemar_p_value([a[k] for k in shared],
                                                  [b[k] for k in shared])


def conclusions(models: Mapping[str, Sequence[Mapping[str, Any]]], *, test_split: str,
                chosen_on: str, references: Mapping[str, Mapping[str, Any]],
                paired: tuple[str, str, tuple[int, float] | None] | None,
                minutes: Mapping[str, float | None]) -> list[str]:
  """Plain-language findings and limitations, each one sentence or two, from the numbers."""
  out = []
  summaries = {name: over_seeds(runs, "accuracy") for name, runs in models.items()}
  ranked = sorted(((s, name) for name, s in summaries.items() if s is not None),
                  key=lambda item: -item[0].mean)
  for summary, name in ranked:
    first = models[name][0]
    ci = interval_of(first, "accuracy")
    ci_text = f" (95 % interval of one run: {ci[0]:.3f}–{ci[1]:.3f})" if ci else ""
    took = minutes.get(name)
    took_text = f", trained in {took:.0f} min" if took else ""
    out.append(f"**{name}** classifies {summary.mean:.1%} of the {test_split} photos "
               f"correctly, {summary}{ci_text}{took_text}.")
  if len(ranked) >= 2 and paired is not None:
    (best, best_name), (second, second_name) = ranked[0], ranked[1]
    gap = best.mean - second.mean
    a, b, test = paired
    verdict = ""
    if test is not None:
      n, p = test
      verdict = (f" On the same {n} photos the difference is "
                 + ("clear" if p < 0.05 else "not significant")
                 + f" (McNemar p = {p:.2g}, {a} vs {b}).")
    out.append(f"{best_name} leads {second_name} by {gap * 100:.1f} accuracy points.{verdict}")
  for label, ref in references.items():
    ours = [(name, over_seeds(runs, ref["metric"])) for name, runs in models.items()]
    ours = [(n, s) for n, s in ours if s is not None]
    if ours:
      beats = ", ".join(f"{n} {s.mean:.3f}" for n, s in ours)
      out.append(f"Reference, {label}: {ref['metric'].replace('_', ' ')} {ref['value']:.2f} on "
                 f"its own split; here: {beats} (a different split: comparable in kind, not "
                 "photo for photo).")
  out.extend(limitations(models, test_split=test_split, chosen_on=chosen_on))
  return out


def limitations(models: Mapping[str, Sequence[Mapping[str, Any]]], *, test_split: str,
                chosen_on: str) -> list[str]:
  counts = [int(runs[0]["count"]) for runs in models.values() if runs and runs[0].get("count")]
  notes = []
  if counts:
    n = max(counts)
    half = 1.96 * np.sqrt(0.85 * 0.15 / n)
    notes.append(f"Limitation: one test split of {n} photos; near 85 % accuracy its 95 % "
                 f"interval is about ±{half * 100:.1f} points, so smaller differences between "
                 "recipes cannot be told from chance.")
  if chosen_on == test_split:
    notes.append(f"Limitation: the checkpoints were chosen on {test_split} itself, so its "
                 "figures are optimistic; set config.data.dev_fraction to choose on a dev "
                 "split carved from train.")
  else:
    notes.append(f"Checkpoints (and recipes) were chosen on the {chosen_on} split carved from "
                 f"train; {test_split} was scored once per final recipe.")
  single = [name for name, runs in models.items() if len(runs) == 1]
  if single:
    which = "per model" if len(single) == len(models) else "for " + ", ".join(single)
    notes.append(f"Limitation: a single seed {which}; seed-to-seed spread is not measured "
                 "there (config.seeds of the study adds seeds).")
  return notes

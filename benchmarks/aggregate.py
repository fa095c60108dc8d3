"""Raw worker results → the report's summaries: per-stack rates, carjax's speed ratios against
the other stacks measured in the same run, and the input pipeline against training (pure)."""

from __future__ import annotations

from benchmarks import stats
from benchmarks.settings import Settings, stack_keys

METRICS = ("train", "infer", "e2e_train")


def rates_of(record: dict) -> list[float]:
  """Images/s of each repeat of a raw measurement record."""
  return stats.rates(record["seconds"], record["images_per_repeat"])


def aggregate(runs: list[dict], pipeline_runs: list[dict], settings: Settings) -> dict:
  """{'summary', 'ratios', 'pipeline'} from raw worker results (pure; unit-tested)."""
  keys = [k[0] for k in stack_keys(settings)]
  summary = {model: stack_summaries([r for r in runs if r["model"] == model], keys)
             for model in settings.models}
  return {"summary": summary, "ratios": carjax_ratios(summary),
          "pipeline": pipeline_against_training(pipeline_runs, summary)}


def stack_summaries(runs: list[dict], keys: list[str]) -> dict:
  """Per stack key: rounds that worked, the rate of each metric pooled over them (and each
  round's median), first-call phases and initialisation times."""
  by_key: dict = {}
  for key in keys:
    mine = [r for r in runs if r["key"] == key]
    if not mine:
      continue
    ok = [r for r in mine if r.get("status") == "ok"]
    entry: dict = {"status": "ok" if ok else mine[0].get("status"),
                   "rounds_ok": len(ok), "rounds": len(mine)}
    if not ok:
      entry["reason"] = mine[0].get("reason")
      by_key[key] = entry
      continue
    entry["implementation"] = ok[0].get("implementation")
    entry["parameters"] = ok[0].get("parameters")
    for metric in METRICS:
      with_metric = [r for r in ok if metric in r]
      if with_metric:
        entry[metric] = stats.summarize(
            [v for r in with_metric for v in rates_of(r[metric])])
        entry[f"{metric}_round_medians"] = [
            stats.summarize(rates_of(r[metric]))["median"] for r in with_metric]
    for phase in ("train_first_call", "infer_first_call"):
      calls = [r[phase] for r in ok if phase in r]
      if calls:
        entry[phase] = {part: stats.summarize([c[part] for c in calls]) for part in calls[0]}
    inits = [r["init_s"] for r in ok if "init_s" in r]
    if inits:
      entry["init_s"] = stats.summarize(inits)
    by_key[key] = entry
  return by_key


def carjax_ratios(summary: dict) -> dict:
  """carjax's train and inference rates over every other stack's, per model: the median
  ratio and its range (min over max … max over min)."""
  ratios: dict = {}
  for model, by_key in summary.items():
    mine = by_key.get("carjax")
    if not mine or mine.get("status") != "ok":
      continue
    ratios[model] = {}
    for metric in ("train", "infer"):
      for key, other in by_key.items():
        if key == "carjax" or other.get("status") != "ok":
          continue
        value = stats.ratio(mine.get(metric), other.get(metric))
        if value is not None:
          ratios[model].setdefault(metric, {})[f"carjax/{key}"] = {
              "median": value, "range": stats.ratio_range(mine.get(metric), other.get(metric))}
  return ratios


def pipeline_against_training(pipeline_runs: list[dict], summary: dict) -> dict:
  """The input pipeline's rates, and each model's carjax training rate against them."""
  pipeline: dict = {"summary": {}, "vs_training": {}}
  ok_pipe = [r for r in pipeline_runs if r.get("status") == "ok"]
  if pipeline_runs and not ok_pipe:
    pipeline["status"] = pipeline_runs[0].get("status")
    pipeline["reason"] = pipeline_runs[0].get("reason")
  for part in ("decode_cold", "cache_warm", "host_feed", "augment"):
    values = [v for r in ok_pipe if part in r for v in rates_of(r[part])]
    if values:
      pipeline["summary"][part] = stats.summarize(values)
  feed = pipeline["summary"].get("host_feed")
  augment = pipeline["summary"].get("augment")
  for model, by_key in summary.items():
    mine = by_key.get("carjax")
    if not mine or mine.get("status") != "ok" or "train" not in mine:
      continue
    train = mine["train"]
    entry = {}
    if feed:
      entry["host_feed/train"] = stats.ratio(feed, train)
    if augment:
      entry["augment/train"] = stats.ratio(augment, train)
      # Per image, train = model + augmentation: the model part alone, estimated.
      rest = 1.0 / train["median"] - 1.0 / augment["median"]
      entry["train_without_augment_est"] = 1.0 / rest if rest > 0 else None
    if "e2e_train" in mine:
      entry["e2e/synthetic_train"] = stats.ratio(mine["e2e_train"], train)
    if entry:
      pipeline["vs_training"][model] = entry
  return pipeline

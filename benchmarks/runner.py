"""Runs the benchmark: one fresh worker process per (stack, model, round), rounds interleaved.

Order of work in each round: the input pipeline (cold cache, then warm) first, then for each
model every stack in turn, the stacks' order rotated from round to round so that slow drift
of the machine (thermal, other load) does not always favour the same stack. Each worker
does its own warm-up and `repeats` timed repeats of `steps` steps; the summary pools every
repeat of every round (median, min/max, IQR) and keeps the per-round medians too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from carjax import host_runtime
from benchmarks import env, stats
from benchmarks import model_configs as configs

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STACKS = ("carjax", "keras", "torch")
STACK_LABELS = {"carjax": "carjax (JAX/Flax, XLA)", "keras": "Keras 3 / TF (oneDNN)",
                "torch_channels_last": "PyTorch, channels-last", "torch_nchw": "PyTorch, NCHW"}
METRICS = ("train", "infer", "e2e_train")
# Process environments a stack can be measured in. "shipped": carjax as it ships (glibc malloc
# tuning of carjax.host_runtime, per-model XLA:CPU options), Keras and PyTorch as users run
# them (glibc's defaults); "hugepages": every stack under carjax's malloc tuning; "glibc": every
# stack under glibc's defaults; "no_xla_options": carjax with the malloc tuning but XLA's
# default CPU options; "warm_cache": carjax as shipped, started again on the compilation
# cache its "shipped" run of the same round has just filled (the warm first call).
ENV_VARIANTS = ("shipped", "hugepages", "glibc", "no_xla_options", "warm_cache")
_CARJAX_ONLY_VARIANTS = ("no_xla_options", "warm_cache")

THREAD_NOTES = (
    "Every worker is pinned to `threads` CPUs with sched_setaffinity (a no-op when that is all "
    "of them) and gets OMP_NUM_THREADS=MKL_NUM_THREADS=threads. XLA/Eigen (carjax) sizes its "
    "thread pool to the CPUs it may use; PyTorch: torch.set_num_threads(threads), "
    "set_num_interop_threads(1); TensorFlow: intra-op threads = threads, inter-op threads = "
    "tf_inter_op_threads. Each stack runs in its own process, so no two thread pools share "
    "the CPUs.")


@dataclasses.dataclass
class Settings:
  models: tuple[str, ...] = configs.DEFAULT_MODELS
  stacks: tuple[str, ...] = STACKS
  torch_layouts: tuple[str, ...] = ("channels_last", "nchw")
  image_size: int = 224
  train_batch: int = 32
  infer_batch: int = 64
  num_classes: int = 20
  optimizer: str = "adamw"
  rounds: int = 3
  repeats: int = 5
  steps: int = 3
  warmup: int = 2
  threads: int = 2
  tf_inter_op_threads: int = 1
  env_variants: tuple[str, ...] = ("shipped",)
  xla_flags: str = ""
  jax_platforms: str = "cpu"
  data: str = ""  # An image folder (cars20); empty: pipeline and end-to-end skipped.
  data_limit: int = 0  # Use only this many images per split (0: all).
  skip_pipeline: bool = False
  profile_dir: str = ""
  task_timeout: int = 3600
  command: str = ""

  def __post_init__(self):
    for model in self.models:
      if model not in configs.MODEL_CONFIGS:
        raise ValueError(f"unknown model {model!r}; expected some of "
                         f"{sorted(configs.MODEL_CONFIGS)}")
    for stack in self.stacks:
      if stack not in STACKS:
        raise ValueError(f"unknown stack {stack!r}; expected some of {STACKS}")
    for name in ("image_size", "train_batch", "infer_batch", "num_classes", "rounds",
                 "repeats", "steps", "threads"):
      if getattr(self, name) < 1:
        raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
    if self.warmup < 0:
      raise ValueError(f"--warmup must be >= 0, got {self.warmup}")
    for variant in self.env_variants:
      if variant not in ENV_VARIANTS:
        raise ValueError(f"unknown environment variant {variant!r}; expected some of "
                         f"{ENV_VARIANTS}")
    if self.optimizer not in configs.OPTIMIZERS:
      raise ValueError(f"--optimizer must be one of {configs.OPTIMIZERS}")


def default_data_dir() -> str:
  """cars20 in $CARJAX_SHARED_DATA, else in ../shared/data beside the repository."""
  root = os.environ.get("CARJAX_SHARED_DATA",
                        os.path.join(os.path.dirname(REPO_ROOT), "shared", "data"))
  return os.path.join(root, "cars20")


def stack_keys(settings: Settings) -> list[tuple[str, str, str | None, str]]:
  """(key, stack, torch layout, environment variant) of every measured stack variant.

  Variants that would repeat another (carjax "hugepages" is carjax as shipped; Keras and PyTorch
  "glibc" are those stacks as shipped) are left out.
  """
  keys = []
  for variant in settings.env_variants:
    for stack in settings.stacks:
      if variant in _CARJAX_ONLY_VARIANTS and stack != "carjax":
        continue
      if (variant == "hugepages" and stack == "carjax") or (variant == "glibc" and stack != "carjax"):
        continue
      suffix = "" if variant == "shipped" else f"+{variant}"
      if stack == "torch":
        keys += [(f"torch_{layout}{suffix}", "torch", layout, variant)
                 for layout in settings.torch_layouts]
      else:
        keys.append((f"{stack}{suffix}", stack, None, variant))
  return keys


def worker_env(settings: Settings, stack: str, variant: str = "shipped") -> dict[str, str]:
  carjax_side = stack in ("carjax", "pipeline")
  tuned = variant == "hugepages" or (carjax_side and variant != "glibc")
  environ = (host_runtime.with_malloc_tuning if tuned
             else host_runtime.without_malloc_tuning)(dict(os.environ))
  if variant == "no_xla_options":
    environ["CARJAX_XLA_CPU_OPTIONS"] = "0"
  threads = str(settings.threads)
  environ.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, KERAS_BACKEND="tensorflow",
                 TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
  environ["PYTHONPATH"] = os.pathsep.join(
      p for p in (REPO_ROOT, environ.get("PYTHONPATH", "")) if p)
  if stack in ("carjax", "pipeline"):
    flags = " ".join(f for f in (environ.get("XLA_FLAGS", ""), settings.xla_flags) if f)
    if flags:
      environ["XLA_FLAGS"] = flags
    if settings.jax_platforms:
      environ["JAX_PLATFORMS"] = settings.jax_platforms
  return environ


def run_worker(task: dict, settings: Settings, workdir: str, log=print) -> dict:
  """Runs one task in a fresh `python -m benchmarks.worker` and returns its result."""
  name = f"{task['round']}_{task['key']}_{task['model']}"
  task_path = os.path.join(workdir, f"{name}.task.json")
  out_path = os.path.join(workdir, f"{name}.out.json")
  with open(task_path, "w") as f:
    json.dump(task, f)
  start = time.perf_counter()
  try:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.worker", task_path, out_path],
        cwd=REPO_ROOT, env=worker_env(settings, task["stack"], task.get("variant", "shipped")),
        capture_output=True,
        text=True, timeout=settings.task_timeout)
    if os.path.exists(out_path):
      with open(out_path) as f:
        result = json.load(f)
    else:
      result = {"status": "error",
                "reason": f"worker exited {proc.returncode} without a result",
                "stderr_tail": proc.stderr[-3000:]}
  except subprocess.TimeoutExpired:
    result = {"status": "error", "reason": f"timed out after {settings.task_timeout} s"}
  result["process_s"] = time.perf_counter() - start
  result.update({k: task[k] for k in ("round", "key", "stack", "model")})
  if task.get("layout"):
    result["layout"] = task["layout"]
  log(f"  round {task['round'] + 1} {task['key']:<20} {task['model']:<20} "
      f"{_one_line(result)}  [{result['process_s']:.0f} s]")
  return result


def _one_line(result: dict) -> str:
  if result.get("status") != "ok":
    return f"{result.get('status')}: {result.get('reason', '')}"[:160]
  parts = []
  for metric in ("train", "infer", "e2e_train", "host_feed", "augment"):
    if metric in result:
      summary = stats.summarize(rates_of(result[metric]))
      parts.append(f"{metric} {summary['median']:.3g} img/s")
  if "decode_cold" in result:
    parts.append(f"decode {rates_of(result['decode_cold'])[0]:.3g} img/s")
  return ", ".join(parts)


def rates_of(record: dict) -> list[float]:
  """Images/s of each repeat of a raw measurement record."""
  return stats.rates(record["seconds"], record["images_per_repeat"])


def _warm_after_shipped(order: list) -> list:
  """The order with carjax's "warm_cache" run moved right behind carjax's "shipped" run."""
  warm = [k for k in order if k[1] == "carjax" and k[3] == "warm_cache"]
  rest = [k for k in order if k not in warm]
  for i, k in enumerate(rest):
    if k[1] == "carjax" and k[3] == "shipped":
      return rest[:i + 1] + warm + rest[i + 1:]
  return rest + warm


def base_task(settings: Settings) -> dict:
  return {k: getattr(settings, k) for k in (
      "image_size", "train_batch", "infer_batch", "num_classes", "optimizer", "repeats",
      "steps", "warmup", "threads", "tf_inter_op_threads")}


def run_benchmark(settings: Settings, log=print) -> dict:
  """Measures everything `settings` asks for; returns the full report (see `aggregate`)."""
  availability = {}
  for stack in settings.stacks:
    ok, reason = env.stack_available(stack)
    availability[stack] = {"available": ok, "reason": reason or None}
  data_dir = settings.data
  data_status = None
  if data_dir and not os.path.isdir(data_dir):
    data_status = f"data folder {data_dir} not found"
    data_dir = ""
  elif not data_dir:
    data_status = "no --data folder given"

  load = env.load_average()
  cpus = os.cpu_count() or 1
  if load and load[0] > 0.25 * cpus:
    log(f"WARNING: the machine is busy (load average {load[0]:.2f} on {cpus} CPUs): timings "
        "will be noisy and thread-pool stacks (OpenMP in PyTorch) can collapse; run the "
        "benchmark on a quiet machine for numbers to publish.")
  workdir = tempfile.mkdtemp(prefix="carjax-bench-")
  cache_dir = os.path.join(workdir, "cache")
  data_spec = ({"source": f"folder:{os.path.abspath(data_dir)}", "cache_dir": cache_dir,
                "limit": settings.data_limit, "split": "train"} if data_dir else None)
  runs, pipeline_runs = [], []
  keys = [k for k in stack_keys(settings) if availability[k[1]]["available"]]
  try:
    for round_index in range(settings.rounds):
      log(f"Round {round_index + 1}/{settings.rounds}")
      if data_spec and not settings.skip_pipeline:
        task = dict(base_task(settings), stack="pipeline", key="pipeline",
                    model=settings.models[0], round=round_index, data=data_spec)
        pipeline_runs.append(run_worker(task, settings, workdir, log))
      shift = round_index % max(len(keys), 1)
      order = keys[shift:] + keys[:shift]
      order = _warm_after_shipped(order)
      for model in settings.models:
        # A fresh compilation cache per model and round: the "shipped" run fills it (cold),
        # the "warm_cache" run, placed right after it, reads it.
        xla_cache = os.path.join(workdir, f"xla_cache_{round_index}_{model}")
        for key, stack, layout, variant in order:
          task = dict(base_task(settings), stack=stack, key=key, model=model,
                      round=round_index, layout=layout, variant=variant)
          if stack == "carjax":
            task["data"] = data_spec if variant == "shipped" else None
            task["compilation_cache"] = xla_cache if variant in ("shipped", "warm_cache") else ""
            if settings.profile_dir and round_index == 0 and variant == "shipped":
              task["profile_dir"] = os.path.abspath(settings.profile_dir)
          runs.append(run_worker(task, settings, workdir, log))
  finally:
    shutil.rmtree(workdir, ignore_errors=True)

  report = {
      "command": settings.command,
      "settings": dataclasses.asdict(settings),
      "thread_settings": THREAD_NOTES,
      "optimizer_note": (f"{settings.optimizer}: carjax optax chain of "
                         "carjax.train.optim.make_optimizer; Keras keras.optimizers."
                         f"{'AdamW' if settings.optimizer == 'adamw' else 'SGD(nesterov)'}; "
                         f"PyTorch torch.optim.{'AdamW' if settings.optimizer == 'adamw' else 'SGD(nesterov)'}"
                         "; cross-entropy with the config's label smoothing everywhere"),
      "carjax_train_step_note": (
          "carjax's train step is the project's own: it also augments the uint8 batch on the "
          "device (random resized crop, flip, colour jitter) and normalises it, which the "
          "Keras and PyTorch steps (fed ready float batches) do not; 'augment' in the "
          "pipeline section measures that part alone"),
      "environment": dict(env.facts(), load_average_at_start=load,
                          load_average_at_end=env.load_average()),
      "stacks": availability,
      "data": {"folder": data_dir or None, "status": data_status,
               "limit": settings.data_limit},
      "runs": runs,
      "pipeline_runs": pipeline_runs,
  }
  report.update(aggregate(runs, pipeline_runs, settings))
  return report


def aggregate(runs: list[dict], pipeline_runs: list[dict], settings: Settings) -> dict:
  """{'summary', 'ratios', 'pipeline'} from raw worker results (pure; unit-tested)."""
  keys = [k[0] for k in stack_keys(settings)]
  summary: dict = {}
  for model in settings.models:
    summary[model] = {}
    for key in keys:
      mine = [r for r in runs if r["model"] == model and r["key"] == key]
      if not mine:
        continue
      ok = [r for r in mine if r.get("status") == "ok"]
      entry: dict = {"status": "ok" if ok else mine[0].get("status"),
                     "rounds_ok": len(ok), "rounds": len(mine)}
      if not ok:
        entry["reason"] = mine[0].get("reason")
        summary[model][key] = entry
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
          entry[phase] = {part: stats.summarize([c[part] for c in calls])
                          for part in calls[0]}
      inits = [r["init_s"] for r in ok if "init_s" in r]
      if inits:
        entry["init_s"] = stats.summarize(inits)
      summary[model][key] = entry

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
  return {"summary": summary, "ratios": ratios, "pipeline": pipeline}


def _fmt(summary: dict | None) -> str:
  return stats.format_rate(summary)


def _fmt_params(count: int | None) -> str:
  if not count:
    return ""
  return f"{count / 1e6:.2f} M" if count >= 100_000 else f"{count / 1e3:.1f} k"


def _fmt_seconds(first: dict | None) -> str:
  if not first:
    return "—"
  total = first["total_s"]["median"]
  if "compile_s" in first:
    return (f"{total:.1f} (trace {first['trace_s']['median']:.1f}, compile "
            f"{first['compile_s']['median']:.1f}, run {first['first_run_s']['median']:.1f})")
  return f"{total:.1f}"


def _label(key: str) -> str:
  base, _, variant = key.partition("+")
  label = STACK_LABELS.get(base, base)
  return f"{label} [{variant}]" if variant else label


def markdown(report: dict) -> str:
  """A RESULTS.md section: the command, the settings, and tables of medians (min–max)."""
  s = report["settings"]
  e = report["environment"]
  v = e["versions"]
  lines = [
      f"### CPU speed benchmark ({e['date'][:10]})",
      "",
      f"Command: `{report['command']}`",
      "",
      f"{e['cpu_model']}, {e['cpu_count']} cores ({s['threads']} used); jax {v.get('jax')}, "
      f"flax {v.get('flax')}, TensorFlow {v.get('tensorflow-cpu') or v.get('tensorflow')}, "
      f"Keras {v.get('keras')}, PyTorch {v.get('torch')}. XLA_FLAGS: "
      f"`{s['xla_flags'] or e['XLA_FLAGS'] or '(none)'}`.",
      f"{s['image_size']} px, {s['num_classes']} classes, train batch {s['train_batch']}, "
      f"inference batch {s['infer_batch']}, optimizer {s['optimizer']}; "
      f"{s['rounds']} rounds (a fresh process per stack × model × round) × {s['repeats']} "
      f"repeats × {s['steps']} steps after {s['warmup']} warm-up steps. Images/s: median "
      "(min–max) over all repeats.",
      "",
      "| model | stack | params | train img/s | inference img/s | first train call, s |",
      "|---|---|---:|---:|---:|---|",
  ]
  for model, by_key in report["summary"].items():
    for key, entry in by_key.items():
      label = _label(key)
      if entry.get("status") != "ok":
        lines.append(f"| {model} | {label} | | {entry.get('status')}: "
                     f"{entry.get('reason') or ''} | | |")
        continue
      params = _fmt_params(entry.get("parameters"))
      lines.append(f"| {model} | {label} | {params} | {_fmt(entry.get('train'))} | "
                   f"{_fmt(entry.get('infer'))} | {_fmt_seconds(entry.get('train_first_call'))} |")
  for stack, info in report["stacks"].items():
    if not info["available"]:
      lines.append(f"| all | {stack} | | {info['reason']} | | |")
  if report["ratios"]:
    lines += ["", "| model | ratio | train | inference |", "|---|---|---:|---:|"]
    for model, by_metric in report["ratios"].items():
      names = sorted({n for m in by_metric.values() for n in m})
      for name in names:
        cells = []
        for metric in ("train", "infer"):
          r = by_metric.get(metric, {}).get(name)
          cells.append(f"{r['median']:.2f}× ({r['range'][0]:.2f}–{r['range'][1]:.2f})"
                       if r else "—")
        lines.append(f"| {model} | {name} | {cells[0]} | {cells[1]} |")
  pipe = report["pipeline"]
  if pipe["summary"]:
    ps = pipe["summary"]
    lines += ["", "Input pipeline (images/s, median (min–max)): decode + resize + write cache "
              f"(cold) {_fmt(ps.get('decode_cold'))}; load the cache (warm) "
              f"{_fmt(ps.get('cache_warm'))}; host batches + device_put "
              f"{_fmt(ps.get('host_feed'))}; on-device augmentation "
              f"{_fmt(ps.get('augment'))}.", "",
              "| model | host feed ÷ train | augmentation ÷ train | end-to-end (real data) "
              "÷ synthetic train | carjax train, end-to-end img/s |", "|---|---:|---:|---:|---:|"]
    for model, entry in pipe["vs_training"].items():
      e2e = report["summary"][model]["carjax"].get("e2e_train")
      cell = lambda k: f"{entry[k]:.2f}" if entry.get(k) is not None else "—"
      lines.append(f"| {model} | {cell('host_feed/train')} | {cell('augment/train')} | "
                   f"{cell('e2e/synthetic_train')} | {_fmt(e2e)} |")
  elif pipe.get("reason") or report["data"]["status"]:
    lines += ["", f"Input pipeline not measured: {pipe.get('reason') or report['data']['status']}."]
  lines += ["", report["thread_settings"], "", report["carjax_train_step_note"] + "."]
  return "\n".join(lines) + "\n"

"""Runs the benchmark: one fresh worker process per (stack, model, round), rounds interleaved.

Order of work in each round: the input pipeline (cold cache, then warm) first, then for each
model every stack in turn, the stacks' order rotated from round to round so that slow drift
of the machine (thermal, other load) does not always favour the same stack. Each worker
does its own warm-up and `repeats` timed repeats of `steps` steps; `benchmarks.aggregate`
pools every repeat of every round (median, min/max, IQR) and keeps the per-round medians too.
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
from benchmarks import aggregate as bench_aggregate
from benchmarks import env, stats
from benchmarks.settings import REPO_ROOT, Settings, stack_keys

THREAD_NOTES = (
    "Every worker is pinned to `threads` CPUs with sched_setaffinity (a no-op when that is all "
    "of them) and gets OMP_NUM_THREADS=MKL_NUM_THREADS=threads. XLA/Eigen (carjax) sizes its "
    "thread pool to the CPUs it may use; PyTorch: torch.set_num_threads(threads), "
    "set_num_interop_threads(1); TensorFlow: intra-op threads = threads, inter-op threads = "
    "tf_inter_op_threads. Each stack runs in its own process, so no two thread pools share "
    "the CPUs.")



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
      summary = stats.summarize(bench_aggregate.rates_of(result[metric]))
      parts.append(f"{metric} {summary['median']:.3g} img/s")
  if "decode_cold" in result:
    parts.append(f"decode {bench_aggregate.rates_of(result['decode_cold'])[0]:.3g} img/s")
  return ", ".join(parts)


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
  report.update(bench_aggregate.aggregate(runs, pipeline_runs, settings))
  return report

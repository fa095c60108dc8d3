r"""Training images/s of the fine-tune recipe for several EfficientNet-Lite variants, one after
the other in one time window, as `launch.train` itself reports them (metrics.jsonl).

  python tools/measure_finetune_throughput.py --data=../shared/data/cars20 \
      --variants=lite0,lite1,lite2 --steps=40 --image_size=224

For each variant: `python -m launch.train --config=configs/efficientnet_lite0_finetune.py
--config.model.variant=V --config.model.pretrained=V_imagenet` in a fresh workdir under
--scratch, stopped with SIGTERM (the trainer's clean stop) once the first logging window (which
holds the compilation) and `--steps` further steps are logged. images/s = images of those steps
/ their seconds, the sum of the trainer's logging windows (10 steps each). Not part of carjax:
a measurement script for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
LOG_EVERY = 10  # config.train.log_every_steps of the recipe (base config)


def _train_records(metrics: pathlib.Path) -> list[dict]:
  if not metrics.exists():
    return []
  with open(metrics) as f:
    return [r for r in map(json.loads, f) if r.get("split") == "train"]


def measure(variant: str, args: argparse.Namespace, scratch: pathlib.Path) -> dict:
  workdir = scratch / variant
  command = [sys.executable, "-m", "launch.train",
             "--config=configs/efficientnet_lite0_finetune.py",
             f"--config.model.variant={variant}", f"--config.model.pretrained={variant}_imagenet",
             f"--config.data.image_size={args.image_size}",
             f"--config.data.source=folder:{os.path.abspath(args.data)}",
             f"--config.train.log_every_steps={LOG_EVERY}", f"--workdir={workdir}"]
  if args.cache_dir:
    command.append(f"--config.data.cache_dir={os.path.abspath(args.cache_dir)}")
  last_step = LOG_EVERY + args.steps
  started = time.time()
  with open(scratch / f"{variant}.log", "w") as log:
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
      while process.poll() is None and not any(
          r["step"] >= last_step for r in _train_records(workdir / "metrics.jsonl")):
        time.sleep(2)
    finally:
      if process.poll() is None:
        process.send_signal(signal.SIGTERM)
      process.wait(timeout=300)
  records = [r for r in _train_records(workdir / "metrics.jsonl")
             if LOG_EVERY < r["step"] <= last_step]
  if len(records) * LOG_EVERY != args.steps:
    raise RuntimeError(f"{variant}: the trainer logged {len(records)} windows after the "
                       f"first, expected {args.steps // LOG_EVERY}; see {scratch / variant}.log")
  images = LOG_EVERY * args.batch_size * len(records)
  seconds = sum(LOG_EVERY * args.batch_size / r["images_per_s"] for r in records)
  return {"variant": variant, "images_per_s": images / seconds, "steps": args.steps,
          "seconds": seconds, "window_images_per_s": [r["images_per_s"] for r in records],
          "started": time.strftime("%H:%M:%S", time.gmtime(started)),
          "load_average_after": os.getloadavg()[0]}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--data", required=True, help="cars20 image folder")
  parser.add_argument("--variants", default="lite0,lite1,lite2")
  parser.add_argument("--steps", type=int, default=40, help="timed steps, a multiple of 10")
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--batch_size", type=int, default=32,
                      help="the recipe's config.train.batch_size (not changed by this script)")
  parser.add_argument("--scratch", default="", help="workdirs and logs (default: a temp dir)")
  parser.add_argument("--cache_dir", default="",
                      help="decoded-image cache of the runs (default: the config's, "
                      "~/.cache/carjax, where a carjax of another version may replace the "
                      "cached split as stale)")
  args = parser.parse_args()
  scratch = pathlib.Path(args.scratch or tempfile.mkdtemp(prefix="finetune_throughput-"))
  scratch.mkdir(parents=True, exist_ok=True)
  results = [measure(variant, args, scratch) for variant in args.variants.split(",")]
  base = results[0]["images_per_s"]
  print(f"| variant | images/s ({args.steps} steps, {args.image_size} px) | ratio to "
        f"{results[0]['variant']} | started (UTC) | load after |")
  print("|---|---:|---:|---|---:|")
  for r in results:
    print(f"| {r['variant']} | {r['images_per_s']:.2f} | {r['images_per_s'] / base:.2f} | "
          f"{r['started']} | {r['load_average_after']:.2f} |")
  with open(scratch / "throughput.json", "w") as f:
    json.dump(results, f, indent=1)
  print(f"raw: {scratch / 'throughput.json'}")


if __name__ == "__main__":
  main()

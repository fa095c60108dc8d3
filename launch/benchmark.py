r"""CPU speed benchmark: carjax vs Keras vs PyTorch, plus the input pipeline, in one run.

  python -m launch.benchmark --models=custom_cnn,efficientnet_b0,efficientnet_lite0 \
      --stacks=carjax,keras,torch --image_size=224 --train_batch=32 --infer_batch=64 \
      --rounds=3 --repeats=5 --steps=3 --warmup=2 --threads=2 --output=bench.json --markdown

Every (stack, model, round) runs in a fresh process (benchmarks.worker); rounds are
interleaved across stacks. Writes every raw timing and the environment to --output (JSON)
and, with --markdown, a RESULTS.md table to the same name with .md (also printed).
Keras and PyTorch are optional (`pip install -e .[bench]`); a missing one is reported as
"not installed". Smoke run (seconds):

  python -m launch.benchmark --models=tiny_cnn --stacks=carjax --image_size=32 \
      --train_batch=4 --infer_batch=4 --rounds=1 --repeats=2 --steps=1 --warmup=1 \
      --data_limit=64 --output=/tmp/bench.json --markdown
"""

import os
import shlex
import sys

from absl import app
from absl import flags

from carjax import cli
from benchmarks import model_configs as configs
from benchmarks import report as bench_report
from benchmarks import runner
from benchmarks import settings as bench_settings

_MODELS = flags.DEFINE_list("models", list(configs.DEFAULT_MODELS),
                            f"Models to measure, of {sorted(configs.MODEL_CONFIGS)}.")
_STACKS = flags.DEFINE_list("stacks", list(bench_settings.STACKS), "Stacks: carjax, keras, torch.")
_TORCH_LAYOUTS = flags.DEFINE_list("torch_layouts", ["channels_last", "nchw"],
                                   "PyTorch memory layouts to measure.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Input side in pixels, every model.")
_TRAIN_BATCH = flags.DEFINE_integer("train_batch", 32, "Training batch size.")
_INFER_BATCH = flags.DEFINE_integer("infer_batch", 64, "Inference batch size.")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 20, "Classifier outputs (cars20: 20).")
_OPTIMIZER = flags.DEFINE_enum("optimizer", "adamw", list(configs.OPTIMIZERS),
                               "Optimizer class used by every stack.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Fresh processes per stack × model, interleaved.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats in each process.")
_STEPS = flags.DEFINE_integer("steps", 3, "Steps per timed repeat.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after the first call.")
_THREADS = flags.DEFINE_integer("threads", len(os.sched_getaffinity(0)),
                                "CPUs each worker is pinned to (threads of every stack).")
_TF_INTER = flags.DEFINE_integer("tf_inter_op_threads", 1, "TensorFlow inter-op threads.")
_ENV_VARIANTS = flags.DEFINE_list(
    "env_variants", ["shipped"],
    f"Process environments to measure each stack in, of {list(bench_settings.ENV_VARIANTS)}: "
    "'shipped' = carjax as shipped (malloc tuning, per-model XLA options), Keras/PyTorch as "
    "users run them; 'hugepages' = Keras/PyTorch under carjax's malloc tuning; 'glibc' = carjax "
    "on glibc's defaults; 'no_xla_options' = carjax without its XLA:CPU options; "
    "'warm_cache' = carjax's first call on a filled compilation cache.")
_XLA_FLAGS = flags.DEFINE_string("xla_flags", "",
                                 "Extra XLA flags for carjax's workers (appended to XLA_FLAGS).")
_JAX_PLATFORMS = flags.DEFINE_string("jax_platforms", "cpu",
                                     "JAX_PLATFORMS of carjax's workers ('' = jax's default).")
_DATA = flags.DEFINE_string("data", bench_settings.default_data_dir(),
                            "Image folder for the pipeline and end-to-end runs ('' = skip).")
_DATA_LIMIT = flags.DEFINE_integer("data_limit", 0, "Images per split used (0 = all).")
_SKIP_PIPELINE = flags.DEFINE_bool("skip_pipeline", False, "Skip the input-pipeline worker.")
_PROFILE_DIR = flags.DEFINE_string("profile_dir", "",
                                   "Write a jax.profiler trace of a few carjax train steps "
                                   "per model (first round) under this folder.")
_TASK_TIMEOUT = flags.DEFINE_integer("task_timeout", 3600, "Seconds per worker process.")
_OUTPUT = flags.DEFINE_string("output", "bench.json", "The JSON report.")
_MARKDOWN = flags.DEFINE_bool("markdown", False,
                              "Also write <output>.md and print the Markdown table.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  command = "python -m launch.benchmark " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  try:
    settings = bench_settings.Settings(
        models=tuple(_MODELS.value), stacks=tuple(_STACKS.value),
        torch_layouts=tuple(_TORCH_LAYOUTS.value), image_size=_IMAGE_SIZE.value,
        train_batch=_TRAIN_BATCH.value, infer_batch=_INFER_BATCH.value,
        num_classes=_NUM_CLASSES.value, optimizer=_OPTIMIZER.value, rounds=_ROUNDS.value,
        repeats=_REPEATS.value, steps=_STEPS.value, warmup=_WARMUP.value,
        threads=_THREADS.value, tf_inter_op_threads=_TF_INTER.value,
        env_variants=tuple(_ENV_VARIANTS.value),
        xla_flags=_XLA_FLAGS.value, jax_platforms=_JAX_PLATFORMS.value, data=_DATA.value,
        data_limit=_DATA_LIMIT.value, skip_pipeline=_SKIP_PIPELINE.value,
        profile_dir=_PROFILE_DIR.value, task_timeout=_TASK_TIMEOUT.value, command=command)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  report = runner.run_benchmark(settings)
  print(bench_report.write(report, _OUTPUT.value, with_markdown=_MARKDOWN.value))


if __name__ == "__main__":
  cli.run(main)

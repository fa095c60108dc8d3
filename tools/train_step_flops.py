r"""XLA's FLOP estimate of a config's train step, for variants of it side by side.

  PYTHONPATH=. python tools/train_step_flops.py --config=configs/efficientnet_lite0_finetune.py \
      --set="data.image_size=(224,224)" \
      --variant=lite0 --variant=lite1:model.variant=lite1 --variant=lite2:model.variant=lite2
  PYTHONPATH=. python tools/train_step_flops.py --config=configs/custom_cnn.py --variant=recipe \
      --variant="wider:model.stage_widths=(40,80,160,320,480)" \
      --variant=deeper:model.convs_per_stage=3

A variant is `NAME[:KEY=VALUE[;KEY=VALUE...]]`, applied over the config and the `--set` values
(VALUE is a Python literal, or else a string). Lowers (does not compile or run) the trainer's
jitted train step and prints `Lowered.cost_analysis()["flops"]`: the unoptimised program's count,
which still holds work XLA later removes (e.g. weight gradients of frozen blocks). An estimate of
relative work, not a measurement of speed. Pretrained weights are not read (their values do not
change the program). Not part of carjax.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util

import jax
import jax.numpy as jnp
import ml_collections

from carjax.data import decode
from carjax.train import setup as setup_lib

NUM_CLASSES = 20  # cars20


def load_config(path: str) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location("flops_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def parse_assignments(text: str) -> dict:
  """`KEY=VALUE;KEY=VALUE` as {key: value}, each VALUE a Python literal or else a string."""
  values = {}
  for item in filter(None, text.split(";")):
    key, sep, raw = item.partition("=")
    if not sep:
      raise SystemExit(f"error: {item!r} is not KEY=VALUE")
    try:
      values[key.strip()] = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      values[key.strip()] = raw
  return values


def step_flops(config: ml_collections.ConfigDict) -> float:
  if "pretrained" in config.model:
    config.model.pretrained = ""
  # The trainer's own set-up; its abstract state is all lowering needs.
  setup = setup_lib.build(config, NUM_CLASSES, steps_per_epoch=100)
  height, width = decode.image_hw(config.data.image_size)
  batch_size = config.train.batch_size
  batch = {"image": jax.ShapeDtypeStruct((batch_size, height, width, 3), jnp.uint8),
           "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32)}
  cost = setup.train_step.lower(setup.abstract, batch, jax.random.key(1)).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--config", default="configs/efficientnet_lite0_finetune.py")
  parser.add_argument("--set", default="", help="KEY=VALUE;... applied to every variant")
  parser.add_argument("--variant", action="append", required=True,
                      help="NAME[:KEY=VALUE;...], repeated; the first is the reference")
  args = parser.parse_args()
  flops = {}
  for variant in args.variant:
    name, _, assignments = variant.partition(":")
    config = load_config(args.config)
    config.update_from_flattened_dict({**parse_assignments(args.set),
                                       **parse_assignments(assignments)})
    flops[name] = step_flops(config)
  reference_name, reference = next(iter(flops.items()))
  for name, value in flops.items():
    print(f"{name}: {value / 1e9:.1f} GFLOP per train step, {value / reference:.2f}x "
          f"{reference_name}")


if __name__ == "__main__":
  main()

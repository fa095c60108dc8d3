r"""XLA's FLOP estimate of the fine-tune recipe's train step for EfficientNet variants.

  PYTHONPATH=. python tools/train_step_flops.py --variants=lite0,lite1,lite2 --image_size=224

Lowers (does not compile or run) the jitted train step of configs/efficientnet_lite0_finetune.py
with `config.model.variant` replaced, and prints `Lowered.cost_analysis()["flops"]`: the
unoptimised program's count, which still holds work XLA later removes (e.g. weight gradients of
frozen blocks). An estimate of relative work, not a measurement of speed. Not part of carjax.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from carjax.train import setup as setup_lib
from configs import efficientnet_lite0_finetune

NUM_CLASSES = 20  # cars20


def step_flops(variant: str, image_size: int) -> float:
  config = efficientnet_lite0_finetune.get_config()
  config.model.variant = variant
  config.model.pretrained = ""  # The weights' values do not change the program.
  config.data.image_size = (image_size, image_size)
  # The trainer's own set-up; its abstract state is all lowering needs.
  setup = setup_lib.build(config, NUM_CLASSES, steps_per_epoch=100)
  batch_size = config.train.batch_size
  batch = {"image": jax.ShapeDtypeStruct((batch_size, image_size, image_size, 3), jnp.uint8),
           "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32)}
  cost = setup.train_step.lower(setup.abstract, batch, jax.random.key(1)).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--variants", default="lite0,lite1,lite2")
  parser.add_argument("--image_size", type=int, default=224)
  args = parser.parse_args()
  flops = {v: step_flops(v, args.image_size) for v in args.variants.split(",")}
  first = next(iter(flops.values()))
  for variant, value in flops.items():
    print(f"{variant}: {value / 1e9:.1f} GFLOP per train step, {value / first:.2f}x "
          f"{next(iter(flops))}")


if __name__ == "__main__":
  main()

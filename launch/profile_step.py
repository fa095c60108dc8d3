r"""Ablation profile of a training step: what each kind of layer costs.

  python -m launch.profile_step --model=b0 --image_size=224 --batch=32 --output=profile.json
  python -m launch.profile_step --variants=cnn,cnn_flax_max_pool,cnn_no_batchnorm,\
      cnn_no_pool_cost --image_size=128 --batch=32

Times the jitted SGD train step of the model as the project runs it on this backend, with
depthwise through XLA's grouped convolution, with depthwise replaced by a per-channel scale,
and additionally without squeeze-and-excitation, with XLA's default CPU options; or the custom
CNN with `nn.max_pool`, without BatchNorm, without pooling cost (benchmarks.breakdown),
and prints a Markdown table. Run it on an otherwise idle machine.
"""

import json
import shlex
import sys

from absl import flags

from carjax import cli
from benchmarks import breakdown

_MODEL = flags.DEFINE_string("model", "b0", "EfficientNet variant (b0, lite0, ...).")
_SIZE = flags.DEFINE_integer("image_size", 224, "Input side in pixels.")
_BATCH = flags.DEFINE_integer("batch", 32, "Training batch size.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed steps per variant.")
_VARIANTS = flags.DEFINE_list("variants", list(breakdown.EFFICIENTNET_VARIANTS),
                              f"Variants to time, of {list(breakdown.VARIANTS)}.")
_OUTPUT = flags.DEFINE_string("output", "", "Also write the raw timings here (JSON).")


def _title(variants) -> str:
  return ("Custom CNN" if all(v in breakdown.CNN_VARIANTS for v in variants)
          else f"EfficientNet-{_MODEL.value}")


def main(argv):
  del argv
  results = [breakdown.time_variant(v, repeats=_REPEATS.value, model_variant=_MODEL.value,
                                    image_size=_SIZE.value, batch_size=_BATCH.value)
             for v in _VARIANTS.value]
  command = "python -m launch.profile_step " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  table = breakdown.markdown(
      results, title=f"{_title(_VARIANTS.value)} train step, {_SIZE.value} px, "
                     f"batch {_BATCH.value}: `{command}`")
  print(table)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      json.dump({"command": command, "results": results}, f, indent=1)


if __name__ == "__main__":
  cli.run(main)

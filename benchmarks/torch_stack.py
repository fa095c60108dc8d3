"""PyTorch (CPU, eager) reference models, NCHW or channels-last (benchmark worker side).

* EfficientNet-B0 / -Lite0: `benchmarks.torch_models.EfficientNet`, written after the
  paper's block table with torchvision's layout, so no torchvision is needed. For Lite0 the
  pure-PyTorch package `efficientnet-lite-pytorch` is used instead when it is installed
  (`implementation` in the results says which).
* The custom CNN: `benchmarks.torch_models.CustomCNN`, the layers of carjax's, same config.

Training: `zero_grad`, forward, `F.cross_entropy` with the config's label smoothing,
backward, optimizer step, with the same optimizer class as carjax (`torch.optim.AdamW`, or
`SGD` with Nesterov momentum). Inference: `model.eval()` under `torch.inference_mode()`.
Inputs are float32 batches already normalised.
"""

from __future__ import annotations

import importlib.util
import time

from benchmarks import model_configs as configs
from benchmarks.timing import Unavailable, sample, timed_repeats

LAYOUTS = ("channels_last", "nchw")


def build(config, image_size: int, num_classes: int, prefer_package: bool = True):
  """(torch module, implementation name) for a benchmark config."""
  from benchmarks import torch_models  # pylint: disable=g-import-not-at-top
  variant = configs.efficientnet_variant(config)
  overrides = dict(config.model.get("overrides", {}) or {})
  dropout = overrides.get("dropout_rate", 0.2)
  drop_connect = overrides.get("drop_connect_rate", 0.2)
  if variant == "lite0" and prefer_package and importlib.util.find_spec(
      "efficientnet_lite_pytorch") is not None:
    from efficientnet_lite_pytorch import EfficientNet  # pylint: disable=g-import-not-at-top
    model = EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes,
                                   dropout_rate=dropout, drop_connect_rate=drop_connect)
    return model, "efficientnet_lite_pytorch.EfficientNet('efficientnet-lite0')"
  if variant in ("b0", "lite0"):
    return (torch_models.EfficientNet(num_classes, lite=variant == "lite0", dropout=dropout,
                             drop_connect=drop_connect),
            f"benchmark EfficientNet-{variant.upper()} (torchvision layout)")
  if variant is not None:
    raise Unavailable(f"no PyTorch EfficientNet-{variant} in the benchmark")
  return torch_models.CustomCNN(config.model, image_size, num_classes), "benchmark CustomCNN (PyTorch)"


def measure(task: dict) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(task["threads"])
  try:
    torch.set_num_interop_threads(1)
  except RuntimeError:
    pass  # Already set (only possible before the first parallel op).
  torch.manual_seed(0)

  layout = task.get("layout", "channels_last")
  if layout not in LAYOUTS:
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
  memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
  size, train_batch, infer_batch = task["image_size"], task["train_batch"], task["infer_batch"]
  num_classes = task["num_classes"]
  config = configs.bench_config(task["model"], image_size=size, batch_size=train_batch,
                                infer_batch=infer_batch, optimizer=task["optimizer"])
  start = time.perf_counter()
  model, implementation = build(config, size, num_classes)
  model = model.to(memory_format=memory_format)
  train_cfg = config.train
  decay, no_decay = [], []
  for p in model.parameters():
    (decay if p.ndim > 1 else no_decay).append(p)  # Kernels only, as in carjax.
  groups = [{"params": decay, "weight_decay": train_cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]
  if train_cfg.optimizer == "adamw":
    optimizer = torch.optim.AdamW(groups, lr=train_cfg.learning_rate)
  else:
    optimizer = torch.optim.SGD(groups, lr=train_cfg.learning_rate,
                                momentum=train_cfg.momentum, nesterov=True)
  result = {"implementation": implementation, "layout": layout,
            "build_s": time.perf_counter() - start,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "threads": {"torch_num_threads": torch.get_num_threads(),
                        "torch_interop_threads": torch.get_num_interop_threads()},
            "mkldnn_enabled": bool(torch.backends.mkldnn.is_available())}

  generator = torch.Generator().manual_seed(0)
  def inputs(batch):
    x = torch.randn((batch, 3, size, size), generator=generator)
    return x.contiguous(memory_format=memory_format)

  measured = task.get("measure", ("train", "infer"))
  warmup, repeats, steps = task["warmup"], task["repeats"], task["steps"]
  if "train" in measured:
    x = inputs(train_batch)
    y = torch.randint(0, num_classes, (train_batch,), generator=generator)
    model.train()

    def train_once():
      optimizer.zero_grad(set_to_none=True)
      loss = F.cross_entropy(model(x), y, label_smoothing=train_cfg.label_smoothing)
      loss.backward()
      optimizer.step()
      return loss

    start = time.perf_counter()
    train_once().item()
    result["train_first_call"] = {"total_s": time.perf_counter() - start}
    result["train"] = sample(
        timed_repeats(train_once, lambda loss: loss.item(), warmup=warmup, repeats=repeats,
                      steps=steps), train_batch, steps)
  if "infer" in measured:
    x = inputs(infer_batch)
    model.eval()

    def infer_once():
      with torch.inference_mode():
        return model(x)

    start = time.perf_counter()
    infer_once()
    result["infer_first_call"] = {"total_s": time.perf_counter() - start}
    result["infer"] = sample(
        timed_repeats(infer_once, lambda _: None, warmup=warmup, repeats=repeats,
                      steps=steps), infer_batch, steps)
  return result

"""PyTorch (CPU, eager) reference models, NCHW or channels-last (benchmark worker side).

* EfficientNet-B0 / -Lite0: written here after the paper's block table with torchvision's
  layout (symmetric padding, SiLU/ReLU6, squeeze-excitation in B0 only, stochastic depth per
  example), so no torchvision is needed. For Lite0 the pure-PyTorch package
  `efficientnet-lite-pytorch` is used instead when it is installed (`implementation` in the
  results says which).
* The custom CNN: the layers of `carjax.models.cnn.CustomCNN`, built from the same config.

Training: `zero_grad`, forward, `F.cross_entropy` with the config's label smoothing,
backward, optimizer step, with the same optimizer class as carjax (`torch.optim.AdamW`, or
`SGD` with Nesterov momentum). Inference: `model.eval()` under `torch.inference_mode()`.
Inputs are float32 batches already normalised.
"""

from __future__ import annotations

import importlib.util
import math
import time


from benchmarks import model_configs as configs
from benchmarks.timing import Unavailable, sample, timed_repeats

# (repeats, kernel, stride, expand ratio, output channels) of EfficientNet-B0's 7 stages.
B0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
             (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
LAYOUTS = ("channels_last", "nchw")


def _modules():
  """The torch module classes, defined only once torch is imported (in the torch worker)."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  class StochasticDepth(nn.Module):
    def __init__(self, rate: float):
      super().__init__()
      self.rate = rate

    def forward(self, x):
      if not self.training or self.rate == 0.0:
        return x
      keep = 1.0 - self.rate
      mask = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device)
      return x * mask.bernoulli_(keep).div_(keep)

  def conv_bn_act(cin, cout, kernel, stride=1, groups=1, act=None):
    layers = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups,
                        bias=False),
              nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)]
    if act is not None:
      layers.append(act())
    return nn.Sequential(*layers)

  class MBConv(nn.Module):
    def __init__(self, cin, cout, kernel, stride, expand, se, act, drop_rate):
      super().__init__()
      mid = cin * expand
      layers = [] if expand == 1 else [conv_bn_act(cin, mid, 1, act=act)]
      layers.append(conv_bn_act(mid, mid, kernel, stride, groups=mid, act=act))
      if se:
        squeeze = max(1, cin // 4)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(mid, squeeze, 1), act(),
                                nn.Conv2d(squeeze, mid, 1), nn.Sigmoid())
      else:
        self.se = None
      self.body = nn.Sequential(*layers)
      self.project = conv_bn_act(mid, cout, 1)
      self.residual = stride == 1 and cin == cout
      self.drop = StochasticDepth(drop_rate)

    def forward(self, x):
      y = self.body(x)
      if self.se is not None:
        y = y * self.se(y)
      y = self.project(y)
      return x + self.drop(y) if self.residual else y

  class EfficientNet(nn.Module):
    """B0 (lite=False) or Lite0 (lite=True: ReLU6, no squeeze-excitation)."""

    def __init__(self, num_classes, lite, dropout=0.2, drop_connect=0.2):
      super().__init__()
      act = nn.ReLU6 if lite else nn.SiLU
      blocks = [conv_bn_act(3, 32, 3, 2, act=act)]
      total = sum(s[0] for s in B0_STAGES)
      cin, index = 32, 0
      for repeats, kernel, stride, expand, cout in B0_STAGES:
        for r in range(repeats):
          blocks.append(MBConv(cin, cout, kernel, stride if r == 0 else 1, expand,
                               not lite, act, drop_connect * index / total))
          cin, index = cout, index + 1
      blocks.append(conv_bn_act(cin, 1280, 1, act=act))
      self.features = nn.Sequential(*blocks)
      self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))
      for m in self.modules():
        if isinstance(m, nn.Conv2d):
          nn.init.kaiming_normal_(m.weight, mode="fan_out")
          if m.bias is not None:
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
          bound = 1.0 / math.sqrt(m.out_features)
          nn.init.uniform_(m.weight, -bound, bound)
          nn.init.zeros_(m.bias)

    def forward(self, x):
      return self.classifier(torch.flatten(self.features(x).mean((2, 3)), 1))

  class CustomCNN(nn.Module):
    def __init__(self, model_config, image_size, num_classes):
      super().__init__()
      layers, cin, size = [], 3, image_size
      for stage, width in enumerate(model_config.stage_widths):
        for i in range(model_config.convs_per_stage):
          stride = model_config.stem_stride if stage == 0 and i == 0 else 1
          k = model_config.kernel_size
          layers += [nn.Conv2d(cin, width, k, stride, (k - 1) // 2,
                               bias=not model_config.use_batchnorm)]
          if model_config.use_batchnorm:
            layers.append(nn.BatchNorm2d(width, eps=1e-5, momentum=0.1))
          layers.append(nn.ReLU())
          cin, size = width, -(-size // stride)
        if model_config.pooling in ("max", "avg"):
          layers.append(nn.MaxPool2d(2) if model_config.pooling == "max" else nn.AvgPool2d(2))
          size //= 2
      self.features = nn.Sequential(*layers)
      self.global_pool = model_config.global_pool
      flat = cin if self.global_pool == "avg" else cin * size * size
      head = []
      for width in model_config.dense_widths:
        head += [nn.Dropout(model_config.dropout_rate), nn.Linear(flat, width), nn.ReLU()]
        flat = width
      head += [nn.Dropout(model_config.dropout_rate), nn.Linear(flat, num_classes)]
      self.head = nn.Sequential(*head)

    def forward(self, x):
      x = self.features(x)
      x = x.mean((2, 3)) if self.global_pool == "avg" else torch.flatten(x, 1)
      return self.head(x)

  return EfficientNet, CustomCNN


def build(config, image_size: int, num_classes: int, prefer_package: bool = True):
  """(torch module, implementation name) for a benchmark config."""
  efficientnet_cls, custom_cls = _modules()
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
    return (efficientnet_cls(num_classes, lite=variant == "lite0", dropout=dropout,
                             drop_connect=drop_connect),
            f"benchmark EfficientNet-{variant.upper()} (torchvision layout)")
  if variant is not None:
    raise Unavailable(f"no PyTorch EfficientNet-{variant} in the benchmark")
  return custom_cls(config.model, image_size, num_classes), "benchmark CustomCNN (PyTorch)"


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

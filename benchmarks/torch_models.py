"""The benchmark's PyTorch models (imported by the torch worker only, where torch is installed).

* `EfficientNet`: B0 or Lite0 written after the paper's block table with torchvision's layout
  (symmetric padding, SiLU/ReLU6, squeeze-excitation in B0 only, stochastic depth per
  example), so no torchvision is needed.
* `CustomCNN`: the layers of `carjax.models.cnn.CustomCNN`, built from the same config.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# (repeats, kernel, stride, expand ratio, output channels) of EfficientNet-B0's 7 stages.
B0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
             (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


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

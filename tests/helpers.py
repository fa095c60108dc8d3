"""Builders shared by the tests."""

from __future__ import annotations

from typing import Any

from carjax.models.efficientnet import EfficientNet, efficientnet


def model_from_conventions(conventions: dict[str, Any], num_classes: int | None = None,
                           **overrides) -> EfficientNet:
  """The EfficientNet that converted weights were made for (default: the source's classes);
  `overrides` sets further `EfficientNet` attributes (dtype, dropout_rate...)."""
  if conventions.get("model") != "efficientnet":
    raise ValueError(f"not EfficientNet weights: model={conventions.get('model')!r}")
  kwargs = dict(padding=conventions["padding"], bn_epsilon=conventions["bn_epsilon"],
                bn_momentum=conventions["bn_momentum"], activation=conventions["activation"],
                se=conventions["se"])
  kwargs.update(overrides)
  return efficientnet(conventions["variant"], num_classes or conventions["num_classes"],
                      **kwargs)

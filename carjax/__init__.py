"""carjax: car-make recognition in JAX/Flax.

A custom CNN trained from scratch against a fine-tuned pretrained EfficientNet,
on the same photos, with one trainer, one evaluator and one report.
"""

__version__ = "0.1.0"

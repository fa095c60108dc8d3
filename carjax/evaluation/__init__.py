"""Evaluation: metrics from logits, and evaluating a workdir's checkpoint on any split."""

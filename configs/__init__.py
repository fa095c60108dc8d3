"""Experiment configs: each file's `get_config()` returns a locked ml_collections.ConfigDict."""

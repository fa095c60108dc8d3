"""Thin absl entry points: flags, then one library call. Run as `python -m launch.NAME`."""

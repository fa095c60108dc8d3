"""Speed benchmark of carjax against Keras and PyTorch on the CPU (benchmark-only code).

`python -m launch.benchmark` drives it: `runner` launches one fresh subprocess per
(stack, model, round) — `worker` — so that the XLA, TensorFlow and PyTorch thread pools
never share a process, interleaves the rounds across stacks, and aggregates the raw
timings with `stats`. Keras and PyTorch are optional extras (`pip install -e .[bench]`).
"""

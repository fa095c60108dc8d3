"""The benchmark report on disk: the JSON of every raw timing, and a RESULTS.md section in
Markdown (the command, the settings, tables of medians with their min–max)."""

from __future__ import annotations

import os

from carjax import jsonio
from benchmarks import stats

STACK_LABELS = {"carjax": "carjax (JAX/Flax, XLA)", "keras": "Keras 3 / TF (oneDNN)",
                "torch_channels_last": "PyTorch, channels-last", "torch_nchw": "PyTorch, NCHW"}


def _fmt(summary: dict | None) -> str:
  return stats.format_rate(summary)


def _fmt_params(count: int | None) -> str:
  if not count:
    return ""
  return f"{count / 1e6:.2f} M" if count >= 100_000 else f"{count / 1e3:.1f} k"


def _fmt_seconds(first: dict | None) -> str:
  if not first:
    return "—"
  total = first["total_s"]["median"]
  if "compile_s" in first:
    return (f"{total:.1f} (trace {first['trace_s']['median']:.1f}, compile "
            f"{first['compile_s']['median']:.1f}, run {first['first_run_s']['median']:.1f})")
  return f"{total:.1f}"


def _label(key: str) -> str:
  base, _, variant = key.partition("+")
  label = STACK_LABELS.get(base, base)
  return f"{label} [{variant}]" if variant else label


def markdown(report: dict) -> str:
  """A RESULTS.md section: the command, the settings, and tables of medians (min–max)."""
  s = report["settings"]
  e = report["environment"]
  v = e["versions"]
  lines = [
      f"### CPU speed benchmark ({e['date'][:10]})",
      "",
      f"Command: `{report['command']}`",
      "",
      f"{e['cpu_model']}, {e['cpu_count']} cores ({s['threads']} used); jax {v.get('jax')}, "
      f"flax {v.get('flax')}, TensorFlow {v.get('tensorflow-cpu') or v.get('tensorflow')}, "
      f"Keras {v.get('keras')}, PyTorch {v.get('torch')}. XLA_FLAGS: "
      f"`{s['xla_flags'] or e['XLA_FLAGS'] or '(none)'}`.",
      f"{s['image_size']} px, {s['num_classes']} classes, train batch {s['train_batch']}, "
      f"inference batch {s['infer_batch']}, optimizer {s['optimizer']}; "
      f"{s['rounds']} rounds (a fresh process per stack × model × round) × {s['repeats']} "
      f"repeats × {s['steps']} steps after {s['warmup']} warm-up steps. Images/s: median "
      "(min–max) over all repeats.",
      "",
      "| model | stack | params | train img/s | inference img/s | first train call, s |",
      "|---|---|---:|---:|---:|---|",
  ]
  for model, by_key in report["summary"].items():
    for key, entry in by_key.items():
      label = _label(key)
      if entry.get("status") != "ok":
        lines.append(f"| {model} | {label} | | {entry.get('status')}: "
                     f"{entry.get('reason') or ''} | | |")
        continue
      params = _fmt_params(entry.get("parameters"))
      lines.append(f"| {model} | {label} | {params} | {_fmt(entry.get('train'))} | "
                   f"{_fmt(entry.get('infer'))} | {_fmt_seconds(entry.get('train_first_call'))} |")
  for stack, info in report["stacks"].items():
    if not info["available"]:
      lines.append(f"| all | {stack} | | {info['reason']} | | |")
  if report["ratios"]:
    lines += ["", "| model | ratio | train | inference |", "|---|---|---:|---:|"]
    for model, by_metric in report["ratios"].items():
      names = sorted({n for m in by_metric.values() for n in m})
      for name in names:
        cells = []
        for metric in ("train", "infer"):
          r = by_metric.get(metric, {}).get(name)
          cells.append(f"{r['median']:.2f}× ({r['range'][0]:.2f}–{r['range'][1]:.2f})"
                       if r else "—")
        lines.append(f"| {model} | {name} | {cells[0]} | {cells[1]} |")
  pipe = report["pipeline"]
  if pipe["summary"]:
    ps = pipe["summary"]
    lines += ["", "Input pipeline (images/s, median (min–max)): decode + resize + write cache "
              f"(cold) {_fmt(ps.get('decode_cold'))}; load the cache (warm) "
              f"{_fmt(ps.get('cache_warm'))}; host batches + device_put "
              f"{_fmt(ps.get('host_feed'))}; on-device augmentation "
              f"{_fmt(ps.get('augment'))}.", "",
              "| model | host feed ÷ train | augmentation ÷ train | end-to-end (real data) "
              "÷ synthetic train | carjax train, end-to-end img/s |", "|---|---:|---:|---:|---:|"]
    for model, entry in pipe["vs_training"].items():
      e2e = report["summary"][model]["carjax"].get("e2e_train")
      cell = lambda k: f"{entry[k]:.2f}" if entry.get(k) is not None else "—"
      lines.append(f"| {model} | {cell('host_feed/train')} | {cell('augment/train')} | "
                   f"{cell('e2e/synthetic_train')} | {_fmt(e2e)} |")
  elif pipe.get("reason") or report["data"]["status"]:
    lines += ["", f"Input pipeline not measured: {pipe.get('reason') or report['data']['status']}."]
  lines += ["", report["thread_settings"], "", report["carjax_train_step_note"] + "."]
  return "\n".join(lines) + "\n"


def ratio_lines(report: dict) -> list[str]:
  """One line per (model, metric, other stack): carjax's median speed ratio."""
  return [f"  {model:<20} {metric:<6} {name:<28} {r['median']:.2f}×"
          for model, by_metric in report["ratios"].items()
          for metric, by_name in by_metric.items()
          for name, r in by_name.items()]


def write(report: dict, output: str, *, with_markdown: bool) -> str:
  """Writes the JSON report to `output` (and, `with_markdown`, the Markdown section to the
  same name with .md); returns what to print: the files written, the ratios, the table."""
  output = os.path.abspath(output)
  os.makedirs(os.path.dirname(output), exist_ok=True)
  with open(output, "w") as f:
    jsonio.dump(report, f, indent=1)
  lines = [f"Wrote {output}"] + ratio_lines(report)
  if with_markdown:
    text = markdown(report)
    md_path = os.path.splitext(output)[0] + ".md"
    with open(md_path, "w") as f:
      f.write(text)
    lines += [f"Wrote {md_path}\n", text]
  return "\n".join(lines)

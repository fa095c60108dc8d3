"""The library is a strict stack of floors: every import of a carjax module runs to its own
floor or a lower one, the import graph has no cycle, and carjax never imports the configs,
the launchers, the benchmarks, Keras or PyTorch. Imports inside functions count too.

Floors (README, "How the code is laid out"):
  0  contracts every layer may use: errors, JSON, checkpoints, the workdir layout, metrics,
     plotting, process and host set-up
  1  data/ and models/ (independent of each other)
  2  convert/ (foreign weight files in)
  3  train/, inference, explain (a trained model's numbers)
  4  applications: evaluation, export, the demo
  5  the study report (study/)
"""

from __future__ import annotations

import ast
import pathlib

import pytest

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "carjax"

# Module (or package prefix) -> floor; the longest matching prefix wins.
FLOORS = {
    "carjax": 0, "carjax.errors": 0, "carjax.jsonio": 0, "carjax.extras": 0, "carjax.cli": 0,
    "carjax.logging_setup": 0, "carjax.host_runtime": 0, "carjax.tensorflow_setup": 0,
    "carjax.distributed": 0, "carjax.faults": 0, "carjax.interrupts": 0,
    "carjax.checkpoint": 0, "carjax.workdir": 0, "carjax.metrics": 0, "carjax.plotting": 0,
    "carjax.data": 1, "carjax.models": 1,
    "carjax.convert": 2,
    "carjax.train": 3, "carjax.inference": 3, "carjax.explain": 3,
    "carjax.evaluation": 4, "carjax.export": 4, "carjax.litert": 4, "carjax.demo": 4,
    "carjax.prediction_output": 4,
    "carjax.study": 5,
}
# Floor 1's two halves know nothing of each other.
INDEPENDENT = (("carjax.data", "carjax.models"),)
FORBIDDEN = ("configs", "launch", "benchmarks", "keras", "torch", "tests")


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(REPO_ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: pathlib.Path, name: str, known) -> set[str]:
  """Every module `path` imports, at its top or inside a function ('a.b' for `from a import
  b` when a.b is a module)."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                        + ([base] if base else []))
      for alias in node.names:
        sub = f"{base}.{alias.name}"
        found.add(sub if sub in known else base)
  return found


def _floor(module: str) -> int:
  best = max((p for p in FLOORS if module == p or module.startswith(p + ".")), key=len)
  return FLOORS[best]


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: {m for m in _imports(path, name, modules) if m in modules}
          for name, path in modules.items()}


def test_every_module_has_a_floor():
  unplaced = [m for m in _modules() if m != "carjax" and
              not any(m == p or m.startswith(p + ".") for p in FLOORS if p != "carjax")]
  assert not unplaced, f"give these modules a floor in FLOORS: {unplaced}"


def test_imports_never_run_upward():
  upward = [f"{a} (floor {_floor(a)}) imports {b} (floor {_floor(b)})"
            for a, targets in _graph().items() for b in sorted(targets)
            if _floor(b) > _floor(a)]
  assert not upward, "\n".join(upward)


def test_data_and_models_are_independent():
  crossing = [f"{a} imports {b}" for a, targets in _graph().items() for b in targets
              for x, y in INDEPENDENT for p, q in ((x, y), (y, x))
              if a.startswith(p) and b.startswith(q)]
  assert not crossing, "\n".join(crossing)


def test_import_graph_has_no_cycle():
  graph = _graph()
  state: dict[str, int] = {}  # 1: on the current path, 2: done.
  path: list[str] = []

  def visit(node):
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph[node]):
      # A package's __init__ importing its own submodules is not a cycle through them.
      if nxt.startswith(node + "."):
        continue
      if state.get(nxt) == 1:
        cycle = path[path.index(nxt):] + [nxt]
        pytest.fail("import cycle: " + " -> ".join(cycle))
      if nxt not in state:
        visit(nxt)
    path.pop()
    state[node] = 2

  for node in sorted(graph):
    if node not in state:
      visit(node)


def test_library_imports_no_project_code_and_no_other_framework():
  modules = _modules()
  bad = [f"{name} imports {m}" for name, path in modules.items()
         for m in sorted(_imports(path, name, modules)) if m.split(".")[0] in FORBIDDEN]
  assert not bad, "\n".join(bad)


def test_no_function_over_80_lines():
  long = []
  code = [*PACKAGE.rglob("*.py"), *(REPO_ROOT / "launch").glob("*.py"),
          *(REPO_ROOT / "benchmarks").glob("*.py")]
  for path in sorted(code):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines = node.end_lineno - node.lineno + 1
        if lines > 80:
          long.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name} ({lines} lines)")
  assert not long, "split these functions:\n" + "\n".join(long)


def test_the_graph_holds_the_known_edges():
  graph = _graph()
  assert "carjax.train.setup" in graph["carjax.train.loop"]
  assert "carjax.checkpoint" in graph["carjax.workdir"]
  # Lazy (inside a function) and `from package import module` edges are both seen.
  assert "carjax.convert.weights_cache" in graph["carjax.train.setup"]


def test_the_checker_sees_a_lazy_upward_import(tmp_path):
  """The parser counts an import inside a function, and resolves `from a import b`."""
  source = tmp_path / "m.py"
  source.write_text("def f():\n  from carjax.train import loop\n  import carjax.models\n")
  found = _imports(source, "carjax.data.m", {"carjax.train.loop", "carjax.models"})
  assert found == {"carjax.train.loop", "carjax.models"}
  assert _floor("carjax.train.loop") > _floor("carjax.data.m")

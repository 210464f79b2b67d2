"""The import graph of genode has no cycle (lazy imports inside functions included)."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).parent.parent
PACKAGES = ("genode", "launch", "configs")


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
  """module → the project modules it imports, anywhere in its body."""
  modules = _modules()
  graph = {}
  for name, path in modules.items():
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                          + ([base] if base else []))
        # `from a import b` imports the module a.b if there is one, else a.
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                   for a in node.names]
      else:
        continue
      edges |= {t for t in targets if t in modules and t != name}
    # A submodule importing its own package runs nothing new (the package is importing it).
    graph[name] = {t for t in edges if not name.startswith(t + ".")}
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """A cycle [a, b, …, a] of the directed graph, or None."""
  state = {}

  def visit(node, path):
    state[node] = "open"
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        return path[path.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt, path + [nxt])
        if found:
          return found
    state[node] = "done"
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node, [node])
      if found:
        return found
  return None


def test_find_cycle_finds_one():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_lazy_imports():
  graph = import_graph()
  # launch.train imports genode.loop inside main(): it is an edge.
  assert "genode.loop" in graph["launch.train"]
  assert "genode.experiment" in graph["genode.workdir"]


def test_genode_has_no_import_cycle():
  assert find_cycle(import_graph()) is None


def test_the_layers_point_down():
  """train/ is below the Experiment, the workdir layer above it, the loop above both."""
  graph = import_graph()
  below = [m for m in graph if m.startswith("genode.train")]
  for module in below:
    assert not graph[module] & {"genode.experiment", "genode.workdir", "genode.loop"}, module
  assert "genode.workdir" not in graph["genode.experiment"]

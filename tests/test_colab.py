"""The notebooks run: their code cells, in order, with GENODE_QUICK=1 (`runlocal` configs).

Every notebook ends with a cell that asserts its own headline numbers, so each one tests
itself and a new notebook needs nothing here.
"""

import json
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "colab").glob("*.ipynb"))


def _code_cells(path):
  cells = json.loads(path.read_text())["cells"]
  return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("GENODE_QUICK", "1")
  monkeypatch.setenv("GENODE_CACHE", str(tmp_path / "cache"))
  namespace = {}
  cells = _code_cells(path)
  assert "assert " in cells[-1], f"{path.name} must end with a cell asserting its numbers"
  for i, source in enumerate(cells):
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("!"))
    exec(compile(code, f"{path.name}[cell {i}]", "exec"), namespace)  # pylint: disable=exec-used


def test_there_is_a_notebook():
  assert NOTEBOOKS, "colab/ holds the reproduction notebooks"

"""The notebooks run: their code cells, in order, with GENODE_QUICK=1 (`runlocal` configs)."""

import json
import os
import pathlib

import pytest

OUTPUTS = {"rectified_flow.ipynb": "rf_toy/2rf"}  # the run each notebook evaluates
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
  for i, source in enumerate(_code_cells(path)):
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("!"))
    exec(compile(code, f"{path.name}[cell {i}]", "exec"), namespace)  # pylint: disable=exec-used
  assert os.path.isdir(tmp_path / "runs" / OUTPUTS.get(path.name, "digits_edm") / "eval")


def test_there_is_a_notebook():
  assert NOTEBOOKS, "colab/ holds the reproduction notebooks"

"""Writes a benchmark's results as `<out>/<name>.json` and `<out>/<name>.md`.

Shared by every benchmark (`python -m launch.benchmark sampling|train`): the JSON holds
the numbers (NumPy/JAX scalars and arrays converted to plain Python), the Markdown the
human-readable tables, both with the environment they were measured in.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import numpy as np


class ReportPaths(NamedTuple):
  json: str
  markdown: str


def environment() -> dict[str, Any]:
  """Where the numbers were measured: versions, backend, devices, CPU count, time."""
  devices = jax.devices()
  return {
      "jax": jax.__version__,
      "backend": jax.default_backend(),
      "devices": f"{len(devices)} × {devices[0].device_kind}",
      "cpu_count": os.cpu_count(),
      "python": platform.python_version(),
      "machine": platform.machine(),
      "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
      "utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
  }


def to_jsonable(value: Any) -> Any:
  """Plain-Python copy of nested dicts/lists/tuples of numbers, arrays and strings."""
  if isinstance(value, Mapping):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, (jax.Array, np.ndarray, np.generic)):
    return to_jsonable(np.asarray(value).tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no inf/nan
  return value


def format_number(value: Any, digits: int = 3) -> str:
  """Floats in 3-significant-digit scientific or fixed notation; others as str."""
  if isinstance(value, (float, np.floating)):
    value = float(value)
    if value == 0 or not math.isfinite(value):
      return str(value)
    if 1e-2 <= abs(value) < 1e4:
      return f"{value:.{digits}g}"
    return f"{value:.{digits - 1}e}"
  return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A GitHub-flavoured Markdown table; floats via `format_number`."""
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  for row in rows:
    if len(row) != len(header):
      raise ValueError(f"Row {row!r} has {len(row)} cells; the header has {len(header)}")
    lines.append("| " + " | ".join(format_number(cell) for cell in row) + " |")
  return "\n".join(lines)


def write_report(out_dir: str, name: str, results: Mapping[str, Any],
                 markdown: str) -> ReportPaths:
  """Writes `<out_dir>/<name>.json` (results + environment) and `<out_dir>/<name>.md`."""
  os.makedirs(out_dir, exist_ok=True)
  env = environment()
  paths = ReportPaths(os.path.join(out_dir, f"{name}.json"), os.path.join(out_dir, f"{name}.md"))
  with open(paths.json, "w") as f:
    json.dump(to_jsonable({"benchmark": name, "environment": env, **results}), f, indent=2)
    f.write("\n")
  env_line = ", ".join(f"{k} {v}" for k, v in env.items())
  with open(paths.markdown, "w") as f:
    f.write(f"{markdown.rstrip()}\n\n_Environment: {env_line}._\n")
  return paths

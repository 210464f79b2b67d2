"""Evaluation reports: a Markdown table of sampler settings and a quality-vs-NFE plot.

Records are the dicts written by `genode.evaluation.evaluate` (kind "samples" or
"likelihood"). The headline metric is the first present of HEADLINE_METRICS.
"""

from __future__ import annotations

import os

import numpy as np

HEADLINE_METRICS = ("fid", "feature_fd", "sliced_wasserstein")
_COLUMNS = ("fid", "feature_fd", "feature_fd_ratio", "sliced_wasserstein", "mmd2",
            "true_log_likelihood")
# With eval.repeats > 1: the headline metrics' mean and sd over the sets, and pooled.
_REPEAT_COLUMNS = tuple(f"{m}_{s}" for m in HEADLINE_METRICS
                        for s in ("repeat_mean", "repeat_sd", "pooled"))


def headline_metric(records: list[dict]) -> str | None:
  samples = [r for r in records if r.get("kind") == "samples"]
  for metric in HEADLINE_METRICS:
    if any(r["metrics"].get(metric) is not None for r in samples):
      return metric
  return None


def _fmt(value) -> str:
  if value is None:
    return "–"
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def markdown_table(records: list[dict]) -> str:
  """One row per sampler setting (sorted by solver, then NFE), then the likelihood line."""
  samples = sorted((r for r in records if r.get("kind") == "samples"),
                   key=lambda r: (r["sampler"]["solver"], r["nfe"], r["name"]))
  columns = [c for c in _COLUMNS + _REPEAT_COLUMNS
             if any(r["metrics"].get(c) is not None for r in samples)]
  # The sampler's fields that some setting has (an ODE's grid/steps/tol, a flow's T).
  fields = [f for f in ("grid", "steps", "tol", "temperature")
            if any(r["sampler"].get(f) is not None for r in samples)]
  header = ["setting", "solver"] + fields + ["NFE", "samples/s"] + columns
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in samples:
    s = r["sampler"]
    cells = ([r["name"], s["solver"]] + [s.get(f) for f in fields]
             + [r["nfe"], r["samples_per_s"]] + [r["metrics"].get(c) for c in columns])
    lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
  text = "\n".join(lines) + "\n"
  first = samples[0] if samples else {}
  if first:
    text = (f"Dataset {first.get('dataset')}, step {first.get('step')}, params "
            f"{first.get('params')}, {first.get('num_samples')} samples per setting, seed "
            f"{first.get('seed')}.\n\n") + text
    fd = first["metrics"].get("feature_fd_floor")
    if fd is not None:
      text += (f"\nfeature_fd floor (test vs train split, {first['metrics']['feature_fd_num_test']}"
               f" test images): {fd:.4g}; ratio = feature_fd / floor.\n")
  for r in records:
    if r.get("kind") == "likelihood" and "nll_skipped" in r:
      text += f"\nNLL skipped: {r['nll_skipped']}\n"
    elif r.get("kind") == "likelihood":
      err = r.get("nll_bits_per_dim_stderr")
      draws = r.get("num_dequantizations", 1)
      text += (f"\nNLL ({r['num_examples']} {r['split']} examples, {r['trace']} trace"
               f"{', %d probes' % r['num_probes'] if r['num_probes'] else ''}, "
               f"{r['dequantization'] or 'no'} dequantization"
               f"{', %d draws per example' % draws if draws > 1 else ''}): "
               f"{r['nll_bits_per_dim']:.4f} ± {_fmt(err)} bits/dim "
               f"({r['nll_nats']:.4g} nats), NFE {r['nfe']:.0f}.\n")
      if r.get("nll_gap_nats") is not None:
        text += (f"\nAgainst the true density: NLL − true entropy = {r['nll_gap_nats']:.4f} ± "
                 f"{_fmt(r.get('nll_gap_nats_stderr'))} nats (true entropy "
                 f"{r['true_entropy_nats']:.4f} nats on the same test points).\n")
  return text


def plot_quality_vs_nfe(records: list[dict], path: str, metric: str | None = None) -> bool:
  """Writes `metric` (default: the headline one) against NFE, a line per solver; False if none."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  metric = metric or headline_metric(records)
  if metric is None:
    return False
  by_solver: dict[str, list[tuple[float, float]]] = {}
  for r in records:
    if r.get("kind") == "samples" and r["metrics"].get(metric) is not None:
      line = r["sampler"]["solver"] + (" (optimized)" if r["sampler"].get("grid") ==
                                       "optimized" else "")
      by_solver.setdefault(line, []).append((r["nfe"], r["metrics"][metric]))
  fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
  for solver, points in sorted(by_solver.items()):
    nfe, value = np.array(sorted(points)).T
    ax.plot(nfe, value, marker="o", label=solver,
            linestyle="--" if solver.endswith("(optimized)") else "-")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("NFE")
  ax.set_ylabel(metric)
  first = next(r for r in records if r.get("kind") == "samples")
  ax.set_title(f"{first.get('dataset')} step {first.get('step')}, {first.get('num_samples')} "
               "samples", fontsize=10)
  ax.legend()
  ax.grid(True, which="both", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return True


def write_report(out_dir: str, records: list[dict]) -> None:
  """`results.md` and `quality_vs_nfe.png` in `out_dir`."""
  with open(os.path.join(out_dir, "results.md"), "w") as f:
    f.write(markdown_table(records))
  plot_quality_vs_nfe(records, os.path.join(out_dir, "quality_vs_nfe.png"))

"""One comparison table over trained workdirs of any family (`launch.compare`).

For each workdir, the row is read from what `launch.evaluate` wrote under
`<workdir>/eval/<step>/` (running it first, with the given eval config, when asked and
nothing is there):

  test NLL         bits/dim ± SE (images) or nats ± SE and NLL − true entropy (toy2d with
                   a known density), with the protocol: test examples × dequantization
                   draws, NFE per likelihood evaluation
  FD / floor       feature-Fréchet distance of the default sampler's samples and its floor
                   (toy2d: sliced Wasserstein)
  samples/s, NFE   of the default sampler (the family's `sampler_overrides()` label:
                   diffusion `heun_karras18`, flows `inverse_T1`), else the first setting
  params           parameter count of the checkpoint
  training         wall and process-CPU seconds (`train_wall_s`, `train_cpu_s` of
                   metrics.jsonl; older runs: the sum of the logged steps/s intervals, "≈")

Nothing here branches on a family: every field comes from the workdir's files and the
family interface.
"""

from __future__ import annotations

import glob
import json
import math
import os

import jax
import numpy as np

from genode import workdir as workdir_lib
from genode.train import metrics as metrics_lib


def _eval_dirs(workdir: str) -> list[str]:
  return sorted((d for d in glob.glob(os.path.join(workdir, "eval", "*"))
                 if os.path.isdir(d) and os.path.basename(d).isdigit()),
                key=lambda d: int(os.path.basename(d)))


def _load(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def training_time(workdir: str) -> tuple[float | None, float | None, bool]:
  """(wall s, CPU s, exact) of the training run from its metrics."""
  records = metrics_lib.read_metrics(workdir)
  timed = [r for r in records if "train_wall_s" in r]
  if timed:
    return float(timed[-1]["train_wall_s"]), float(timed[-1]["train_cpu_s"]), True
  wall, last = 0.0, 0
  for r in records:
    if r.get("steps_per_sec"):
      wall += (r["step"] - last) / r["steps_per_sec"]
      last = r["step"]
  return (wall or None), None, False


def parameter_count(workdir: str, step: int) -> int:
  restored = workdir_lib.restore_workdir(workdir, step)
  return int(sum(np.size(x) for x in jax.tree.leaves(restored.state.params)))


def row(workdir: str, *, eval_config=None, step: int | None = None) -> dict:
  """The comparison row of one workdir (evaluating it with `eval_config` if it has no
  evaluation at its selected or newest step)."""
  experiment = workdir_lib.open_experiment(workdir)
  family = experiment.family
  if step is None:
    step = workdir_lib.selected_step(workdir)
  dirs = _eval_dirs(workdir)
  wanted = [d for d in dirs if step is not None and int(os.path.basename(d)) == step]
  if not wanted and eval_config is not None:
    from genode.evaluation import evaluate  # pylint: disable=g-import-not-at-top
    evaluate.evaluate_workdir(workdir, eval_config, step=step)
    dirs = _eval_dirs(workdir)
    wanted = [d for d in dirs if step is None or int(os.path.basename(d)) == step]
  if not wanted:
    wanted = dirs[-1:]
  if not wanted:
    raise FileNotFoundError(f"No evaluation in {workdir}/eval/: run `python -m "
                            f"launch.evaluate --workdir={workdir}` (or pass --evaluate)")
  out_dir = wanted[-1]
  records = [_load(p) for p in sorted(glob.glob(os.path.join(out_dir, "*.json")))]
  samples = [r for r in records if r.get("kind") == "samples"]
  likelihood = next((r for r in records if r.get("kind") == "likelihood"), {})
  default = family.sampler_overrides().label
  chosen = next((r for r in samples if r["name"] == default), samples[0] if samples else {})
  metrics = chosen.get("metrics", {})
  wall, cpu, exact = training_time(workdir)
  eval_step = int(os.path.basename(out_dir))
  return dict(
      workdir=workdir, name=os.path.basename(os.path.normpath(workdir)),
      model=family.describe(), family=getattr(family, "name", "?"), step=eval_step,
      selected=workdir_lib.selected_step(workdir) == eval_step,
      dataset=experiment.config.data.name,
      quantized=likelihood.get("dequantization") is not None,
      nll_bits_per_dim=likelihood.get("nll_bits_per_dim"),
      nll_bits_per_dim_stderr=likelihood.get("nll_bits_per_dim_stderr"),
      nll_nats=likelihood.get("nll_nats"), nll_gap_nats=likelihood.get("nll_gap_nats"),
      nll_gap_nats_stderr=likelihood.get("nll_gap_nats_stderr"),
      true_entropy_nats=likelihood.get("true_entropy_nats"),
      nll_examples=likelihood.get("num_examples"),
      nll_draws=likelihood.get("num_dequantizations", 1), nll_nfe=likelihood.get("nfe"),
      setting=chosen.get("name"), feature_fd=metrics.get("feature_fd"),
      feature_fd_floor=metrics.get("feature_fd_floor"),
      feature_fd_ratio=metrics.get("feature_fd_ratio"),
      sliced_wasserstein=metrics.get("sliced_wasserstein"),
      samples_per_s=chosen.get("samples_per_s"), nfe=chosen.get("nfe"),
      num_params=parameter_count(workdir, eval_step), train_wall_s=wall, train_cpu_s=cpu,
      train_time_exact=exact, num_steps=int(experiment.config.train.num_steps))


def _f(value, fmt="{:.3f}") -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "–"
  return fmt.format(value)


def markdown(rows: list[dict]) -> str:
  """The Markdown table of `rows` (images: bits/dim; 2-D data: nats vs the true entropy)."""
  toy = [r for r in rows if not r["quantized"]]
  image = [r for r in rows if r not in toy]
  text = ""
  if image:
    text += ("| model | workdir (step) | test bits/dim ± SE | NLL protocol | FD / floor | "
             "params | training wall / CPU s | samples/s | NFE/sample |\n"
             "|---|---|---|---|---|---|---|---|---|\n")
    for r in image:
      fd = (f"{_f(r['feature_fd'], '{:.2f}')} / {_f(r['feature_fd_floor'], '{:.2f}')}"
            f" ({_f(r['feature_fd_ratio'], '{:.1f}')}×)")
      text += (f"| {r['model']} | {r['name']} ({r['step']}{', val-selected' if r['selected'] else ''})"
               f" | {_f(r['nll_bits_per_dim'])} ± {_f(r['nll_bits_per_dim_stderr'])}"
               f" | {r['nll_examples']} test × {r['nll_draws']} draws, NFE {_f(r['nll_nfe'], '{:.0f}')}"
               f" | {fd} | {r['num_params']:,} | {_time(r)} | {_f(r['samples_per_s'], '{:.0f}')}"
               f" | {_f(r['nfe'], '{:.0f}')} |\n")
  if toy:
    text += ("\n| model | workdir (step) | data | test NLL nats | NLL − true entropy ± SE | "
             "sliced W₂ | params | training wall / CPU s | samples/s | NFE/sample |\n"
             "|---|---|---|---|---|---|---|---|---|---|\n")
    for r in toy:
      text += (f"| {r['model']} | {r['name']} ({r['step']}) | {r['dataset']} | "
               f"{_f(r['nll_nats'])} | {_f(r['nll_gap_nats'])} ± {_f(r['nll_gap_nats_stderr'])}"
               f" (H = {_f(r['true_entropy_nats'])}) | {_f(r['sliced_wasserstein'], '{:.4f}')}"
               f" | {r['num_params']:,} | {_time(r)} | {_f(r['samples_per_s'], '{:.0f}')}"
               f" | {_f(r['nfe'], '{:.0f}')} |\n")
  return text


def _time(r: dict) -> str:
  approx = "" if r["train_time_exact"] else "≈"
  return f"{approx}{_f(r['train_wall_s'], '{:.0f}')} / {_f(r['train_cpu_s'], '{:.0f}')}"

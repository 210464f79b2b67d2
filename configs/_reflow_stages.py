"""The stages of a rectified-flow pipeline (Liu, Gong & Liu 2022) as configs.

A stage is a config argument: `<stage>` or `<stage>,runlocal` (a CPU smoke test under
`<root>_runlocal`). Every stage's workdir is `<root>/<stage>`; couplings live in
`<root>/pairs_<teacher stage>`:

| stage       | data                      | objective          | init_from   |
|-------------|---------------------------|--------------------|-------------|
| 1rf         | the dataset               | denoising (RF)     | –           |
| 2rf         | couplings pairs_1rf       | reflow             | 1rf         |
| 3rf         | couplings pairs_2rf       | reflow             | 2rf         |
| distill     | couplings pairs_2rf       | distill, 1 step    | 2rf         |
| distill_1rf | couplings pairs_1rf       | distill, 1 step    | 1rf         |
| 2rf_edm     | couplings pairs_edm       | reflow             | edm         |
| distill_edm | couplings pairs_2rf_edm   | distill, 1 step    | 2rf_edm     |
| 2rf_edm_native | couplings pairs_edm    | reflow, EDM formulation | edm    |
| distill_feature | couplings pairs_2rf   | distill, 1 step, feature loss | 2rf |
| distill_pseudo_huber | couplings pairs_2rf | distill, 1 step, pseudo-Huber | 2rf |

(`edm` is the EDM teacher's workdir `<root>/edm`, e.g. the main job's checkpoint, linked
or copied there.) Reflow and distillation start from the teacher's EMA parameters when
the architectures match, with a fresh optimizer and EMA (`genode.workdir.warm_start`),
t ~ U[ε, 1] (`objective.time = "uniform"`; `"u_shaped"` is the U-shaped density of Lee,
Lin & Fanti 2024 with `objective.time_a`, `genode.reflow.rf_time.UShapedTimeSigma`;
`"formulation"` the formulation's p_train), and the squared L2 of the velocity residual
(`objective.loss = "l2"`, the key's default; `"pseudo_huber"` is the pseudo-Huber loss of
Lee, Lin & Fanti 2024, `genode.reflow.objectives.reflow_terms`: no stage sets the key, so
set it in a config file that calls `make`, as ml_collections refuses a new key on the
command line); the pairs come from the teacher's EMA weights (`launch.reflow couple`,
default `--params=ema`). Each couplings dataset checks its teacher
(`data.teacher_workdir`) and shape (`data.expected_shape`).
"""

from __future__ import annotations

import ml_collections

# stage -> (teacher stage whose pairs it trains on, objective)
STAGES = {
    "1rf": (None, None),
    "2rf": ("1rf", {"name": "reflow", "time": "uniform"}),
    "3rf": ("2rf", {"name": "reflow", "time": "uniform"}),
    "distill": ("2rf", {"name": "distill", "num_steps": 1}),
    "distill_1rf": ("1rf", {"name": "distill", "num_steps": 1}),
    "2rf_edm": ("edm", {"name": "reflow", "time": "uniform"}),
    "distill_edm": ("2rf_edm", {"name": "distill", "num_steps": 1}),
    # the student keeps the EDM teacher's formulation (`TEACHER_FORMULATION`), so that
    # init_from starts it at the teacher itself, not at EDM weights behind RF scalings
    "2rf_edm_native": ("edm", {"name": "reflow", "time": "uniform"}),
    # the LPIPS stand-in of genode.reflow.feature_loss (images only)
    "distill_feature": ("2rf", {"name": "distill", "num_steps": 1, "loss": "feature"}),
    # Song & Dhariwal 2023's pseudo-Huber distance in place of L2 (genode.reflow.objectives)
    "distill_pseudo_huber": ("2rf", {"name": "distill", "num_steps": 1,
                                     "loss": "pseudo_huber"}),
}


# stages whose student keeps its teacher's formulation (instead of the rf row)
TEACHER_FORMULATION = {"2rf_edm_native": "edm"}


def parse_arg(arg: str | None) -> tuple[str, bool]:
  """"2rf" → ("2rf", False); "2rf,runlocal" → ("2rf", True); None → ("1rf", False);
  "runlocal" → ("1rf", True)."""
  parts = [p for p in (arg or "1rf").split(",") if p]
  if parts == ["runlocal"]:
    parts = ["1rf", "runlocal"]
  stage, rest = parts[0], parts[1:]
  if stage not in STAGES or rest not in ([], ["runlocal"]):
    raise ValueError(f"Unknown config argument {arg!r}; valid: one of {list(STAGES)}, "
                     "optionally followed by ',runlocal'")
  return stage, bool(rest)


def stage_config(config: ml_collections.ConfigDict, stage: str, root: str,
                 shape: tuple[int, ...], **student) -> ml_collections.ConfigDict:
  """`config` (the 1-RF teacher's) turned into `stage`: couplings data, objective,
  init_from; `student` updates `config.train` (num_steps, …) for the reflow stages."""
  teacher, objective = STAGES[stage]
  if teacher is None:
    return config
  config.data = ml_collections.ConfigDict(dict(
      name="couplings", path=f"{root}/pairs_{teacher}", teacher_workdir=f"{root}/{teacher}",
      expected_shape=tuple(shape)))
  config.objective = ml_collections.ConfigDict(objective)
  config.init_from.workdir = f"{root}/{teacher}"
  if stage in TEACHER_FORMULATION:
    from configs import base  # pylint: disable=g-import-not-at-top
    config.formulation = base.formulation_config(TEACHER_FORMULATION[stage])
  config.train.update(student)
  return config


def commands(config_file: str, root: str, num_pairs: int, couple_flags: str = "") -> str:
  """The pipeline's shell commands (for docstrings and notebooks)."""
  train = f"python -m launch.train --config={config_file}:{{s}} --workdir={root}/{{s}}"
  couple = (f"python -m launch.reflow couple --teacher={root}/{{t}} --out={root}/pairs_{{t}} "
            f"--num_pairs={num_pairs}{couple_flags}")
  lines = [train.format(s="1rf"), couple.format(t="1rf"), train.format(s="2rf"),
           couple.format(t="2rf"), train.format(s="distill"), train.format(s="3rf")]
  return "\n".join(lines)

"""k-rectified flow and one-step distillation on 8×8 digits (Liu, Gong & Liu 2022).

The whole pipeline (each stage a config argument, see configs/_reflow_stages.py):

  R=/tmp/genode/digits_reflow
  python -m launch.train --config=configs/digits_reflow.py:1rf --workdir=$R/1rf
  python -m launch.reflow couple --teacher=$R/1rf --out=$R/pairs_1rf --num_pairs=16384 \
      --solver=heun --steps=18
  python -m launch.train --config=configs/digits_reflow.py:2rf --workdir=$R/2rf
  python -m launch.reflow couple --teacher=$R/2rf --out=$R/pairs_2rf --num_pairs=16384 \
      --solver=heun --steps=18
  python -m launch.train --config=configs/digits_reflow.py:distill --workdir=$R/distill
  python -m launch.train --config=configs/digits_reflow.py:3rf --workdir=$R/3rf
  python -m launch.train --config=configs/digits_reflow.py:distill_1rf --workdir=$R/distill_1rf
  python -m launch.evaluate --workdir=$R/distill --eval=configs/eval_reflow.py:digits

From an EDM teacher (e.g. the main job's): put its workdir at $R/edm, then
  python -m launch.reflow couple --teacher=$R/edm --out=$R/pairs_edm --num_pairs=16384 \
      --solver=heun --steps=18
  python -m launch.train --config=configs/digits_reflow.py:2rf_edm --workdir=$R/2rf_edm
  python -m launch.reflow couple --teacher=$R/2rf_edm --out=$R/pairs_2rf_edm \
      --num_pairs=16384 --solver=heun --steps=18
  python -m launch.train --config=configs/digits_reflow.py:distill_edm --workdir=$R/distill_edm
  # the student in the teacher's EDM formulation (init_from is then the teacher itself):
  python -m launch.train --config=configs/digits_reflow.py:2rf_edm_native \
      --workdir=$R/2rf_edm_native

Distillation with the feature loss (genode/reflow/feature_loss.py, an LPIPS stand-in), or
with the pseudo-Huber distance (Song & Dhariwal 2023) in place of L2:
  python -m launch.train --config=configs/digits_reflow.py:distill_feature \
      --workdir=$R/distill_feature
  python -m launch.train --config=configs/digits_reflow.py:distill_pseudo_huber \
      --workdir=$R/distill_pseudo_huber
Pseudo-Huber (WORKSPACE §12, "Distillation levers"): one step 3.84 against L2's 4.02 at
2000 steps (Δ −0.14 ± 0.06, 4/5 sets), but the same plateau with more steps (≈ 3.8), and
it helps the distilled 1-RF more (4.54 → 3.76), which then ties the distilled 2-RF (with
a cosine decay over 4000 steps the 1-RF student reaches 3.43 and beats the 2-RF student's
3.75, 4/5 sets): so not the default.

`:<stage>,runlocal` shrinks every stage to a CPU smoke test under $R=/tmp/genode/
digits_reflow_runlocal. 1-RF: the small U-Net of configs/digits_rf.py (2000 steps).
2-RF: 12000 steps (2rf_edm too; 3rf: 3000) from the teacher's EMA parameters with a
fresh Adam and EMA, on 16k pairs of the 1-RF's 35-NFE Heun, its training time the
U-shaped density of Lee, Lin & Fanti 2024 (`objective.time = "u_shaped"`, a = 4; the
other reflow stages keep the paper's t ~ U[ε, 1], as measured), its loss their pseudo-Huber
loss of the velocity residual (`objective.loss = "pseudo_huber"`, c = 0.00054·√D; the other
reflow stages keep Liu et al.'s squared L2); every couplings set is
16k pairs; distillation: 2000 steps of one-step L2. The teacher's quality to compare with
is its Heun 18-step (35 NFE) FD.

Why a U-shaped, pseudo-Huber, 12000-step 2-RF on 16k pairs (WORKSPACE §12; 5 × 297
samples of `--eval.repeats=5`, every model on the same noise, pooled feature FD, paired Δ
per set ± SE; the 1-RF teacher's Heun 35 is 2.97): one Euler step uses the velocity at the
noise end only, which U[ε, 1] rarely trains; the U-shaped time gives 4.19 against the
uniform time's 4.73 (L2, Δ −0.56 ± 0.15, 5/5 sets). L2 regresses to the mean where the
coupling is uncertain, which FD punishes; the pseudo-Huber loss of the velocity residual,
sqrt(‖r‖² + c²) − c ≈ ‖r‖ at these residuals, gives 3.97 against L2's 4.18 (Δ −0.22 ± 0.17,
3/5; at 6000 steps −0.16 ± 0.11, 4/5, and without gradient clipping −0.11 ± 0.07, 4/5, so
the gain is the loss, not the clipping every pseudo-Huber step gets), Heun 35 2.85 against
2.94 (5/5). Its distilled student: 3.51 (1.18×; from the L2 2-RF 3.72, Δ −0.28 ± 0.12, 4/5)
against the distilled 1-RF's 4.13 on the same 16k pairs of the 1-RF (§12; the L2
2-RF's student beat it by −0.44 ± 0.06, 5/5). Four times the pairs changed
neither the (uniform) 2-RF nor its student measurably. Not the default,
measured in §12: the pseudo-Huber distance for distillation (3.35 from this 2-RF, but it
helped the distilled 1-RF more), a > 4, longer distillation (flat after ≈ 4000 steps), a
cosine lr decay, other batch sizes and learning rates. Cost, measured end to end on the
idle 2-core machine with the L2 2-RF (the same stages and steps; the pseudo-Huber loss adds a
per-sample norm to a U-Net step): 781 s wall (13.0 minutes), 1180 CPU s, 55 % of it the 2-RF.
L2 2-RF workdirs from before this default are not resumed by it (another config).
The couplings of a k-RF teacher (pairs_2rf, …) draw fresh noise by default (seed 1, 2, …:
`genode.reflow.couple.fresh_seed`), not the z the teacher was trained on.
"""

from configs import base
from configs import _reflow_stages as reflow_stages

ROOT = "/tmp/genode/digits_reflow"
# 2rf_edm: the EDM weights behind the RF scalings start far from the teacher (first loss
# 1.6 against 0.046 from the 1-RF); its one step, pooled over 5 × 297 samples, is 2.42×
# the teacher's Heun-35 FD at 3000 steps, 1.85× at 6000, 1.56× at 12000 (1.47× at 24000;
# WORKSPACE §12).
STUDENT_STEPS = {"2rf": 12000, "3rf": 3000, "2rf_edm": 12000, "2rf_edm_native": 3000,
                 "distill": 2000, "distill_1rf": 2000, "distill_edm": 2000,
                 "distill_feature": 2000, "distill_pseudo_huber": 2000}


def get_config(arg=None):
  stage, runlocal = reflow_stages.parse_arg(arg)
  return make(stage, runlocal, ROOT + ("_runlocal" if runlocal else ""))


def make(stage: str, runlocal: bool = False, root: str = ROOT):
  """The config of `stage` with its workdirs and couplings under `root`."""
  config = base.digits_config("rf", "runlocal" if runlocal else None)
  student = {} if runlocal or stage == "1rf" else dict(
      num_steps=STUDENT_STEPS[stage], sample_every=STUDENT_STEPS[stage])
  config = reflow_stages.stage_config(config, stage, root, (8, 8, 1), **student)
  if stage != "1rf" and not runlocal:
    config.optim.learning_rate = 1e-3
  if stage == "2rf":
    config.objective.time = "u_shaped"  # Lee, Lin & Fanti 2024; time_a: its default 4
    config.objective.loss = "pseudo_huber"  # Lee, Lin & Fanti 2024, of the velocity residual
  return config

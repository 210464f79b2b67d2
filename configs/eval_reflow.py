"""Evaluation of rectified flows: straightness and 1/2/4-step quality beside many steps.

  python -m launch.evaluate --workdir=/tmp/genode/toy2d_reflow/2rf --eval=configs/eval_reflow.py:toy
  python -m launch.evaluate --workdir=/tmp/genode/digits_reflow/distill \
      --eval=configs/eval_reflow.py:digits
  python -m launch.evaluate --workdir=/tmp/genode/smoke --eval=configs/eval_reflow.py:runlocal

configs/eval.py's fields plus an `rf` section (genode/evaluation/reflow.py):

  rf.euler_steps           k of the `euler_rf<k>` rows: k Euler steps on the grid uniform
                           in RF time (1 step = D(σ_max·z; σ_max))
  rf.straightness_samples  paths for S(Z) (eq. 3); 0 = none
  rf.straightness_steps    Euler steps of those paths
  rf.trajectory_paths      paths drawn in trajectories.png (2-D data)
  rf.teacher_row           score the couplings' stored endpoints (a student's teacher)

`toy`: 10 000 samples per row against 10 000 fresh true samples (a 2000-sample SW₂ sits
at its own noise floor), SW₂ and MMD, the many-step rows Heun 18 (35 NFE) and Euler 100
on the RF-time grid. Every SW₂ comes with `sliced_wasserstein_floor`, the SW₂ of another
fresh true set of the same size: at 10k on 8gaussians it is 0.039 ± 0.012 over seeds, so
rows within ≈ 0.02 of each other (e.g. a teacher_couplings row, scored on the couplings'
own noise, against the teacher's Euler-100 row, on the evaluation's) are not different. `digits`: feature FD against the train split with its floor
(test vs train, 297 test images, as many samples), Heun 18 (35 NFE) as the many-step row.
"""

import ml_collections

from configs import eval as eval_base


def get_config(arg=None):
  if arg not in ("toy", "digits", "runlocal"):
    raise ValueError(f"Unknown eval config argument {arg!r}; valid: 'toy', 'digits', "
                     "'runlocal'")
  config = eval_base.get_config("runlocal" if arg == "runlocal" else None)
  config.update(solvers=("heun",), steps=(18,), adaptive_solvers=(), grid="karras")
  config.rf = ml_collections.ConfigDict(dict(
      euler_steps=(1, 2, 4), straightness_samples=1000, straightness_steps=100,
      trajectory_paths=64, teacher_row=True))
  if arg == "toy":
    config.update(num_samples=10_000, batch_size=2500,
                  metrics=("sliced_wasserstein", "mmd"))
    config.rf.euler_steps = (1, 2, 4, 100)
  elif arg == "digits":
    config.update(num_samples=0, batch_size=300, metrics=("feature_fd",))
    config.rf.straightness_samples = 256
  else:
    config.update(steps=(4,), metrics=())
    config.rf.update(straightness_samples=16, straightness_steps=8, trajectory_paths=8)
  return config

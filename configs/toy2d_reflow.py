"""k-rectified flow and one-step distillation on 8gaussians (Liu, Gong & Liu 2022, §5.1).

The whole pipeline (each stage a config argument, see configs/_reflow_stages.py):

  R=/tmp/genode/toy2d_reflow
  python -m launch.train --config=configs/toy2d_reflow.py:1rf --workdir=$R/1rf
  python -m launch.reflow couple --teacher=$R/1rf --out=$R/pairs_1rf --num_pairs=50000
  python -m launch.train --config=configs/toy2d_reflow.py:2rf --workdir=$R/2rf
  python -m launch.reflow couple --teacher=$R/2rf --out=$R/pairs_2rf --num_pairs=50000
  python -m launch.train --config=configs/toy2d_reflow.py:distill --workdir=$R/distill
  python -m launch.train --config=configs/toy2d_reflow.py:3rf --workdir=$R/3rf
  python -m launch.train --config=configs/toy2d_reflow.py:distill_1rf --workdir=$R/distill_1rf
  python -m launch.evaluate --workdir=$R/2rf --eval=configs/eval_reflow.py:toy

`:<stage>,runlocal` shrinks every stage to a CPU smoke test under $R=/tmp/genode/
toy2d_reflow_runlocal (couple with --num_pairs=256). 1-RF: the time-conditioned MLP
(3 × 256) of configs/toy2d_rf.py on 8gaussians. Reflow: the 1-RF's EMA parameters, fresh
Adam (lr 1e-3) and EMA, t ~ U[ε, 1], the pairs of the teacher's EMA from dopri5 at
rtol = atol = 1e-5. Distillation: one Euler step against the 2-RF's endpoint, L2.
"""

from configs import base
from configs import _reflow_stages as reflow_stages

ROOT = "/tmp/genode/toy2d_reflow"


def get_config(arg=None):
  stage, runlocal = reflow_stages.parse_arg(arg)
  return make(stage, runlocal, ROOT + ("_runlocal" if runlocal else ""))


def make(stage: str, runlocal: bool = False, root: str = ROOT):
  """The config of `stage` with its workdirs and couplings under `root`."""
  config = base.toy2d_config("rf", "runlocal" if runlocal else None)
  config.data.distribution = "8gaussians"
  student = {} if runlocal else dict(num_steps=3000)
  config = reflow_stages.stage_config(config, stage, root, (2,), **student)
  if stage != "1rf" and not runlocal:
    config.optim.warmup_steps = 100
  return config

"""rectified flow (Liu et al. 2023) on a 2-D toy distribution (two moons), time-conditioned MLP.

  python -m launch.train --config=configs/toy2d_rf.py --workdir=/tmp/genode/toy2d_rf
  python -m launch.train --config=configs/toy2d_rf.py:runlocal --workdir=/tmp/genode/smoke

Other toys: `--config.data.distribution=8gaussians` (moons, 8gaussians, checkerboard,
swissroll, pinwheel).
"""

from configs import base


def get_config(arg=None):
  return base.toy2d_config("rf", arg)

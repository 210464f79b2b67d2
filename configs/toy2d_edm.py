"""EDM (Karras et al. 2022) on a 2-D toy distribution (two moons), time-conditioned MLP.

  python -m launch.train --config=configs/toy2d_edm.py --workdir=/tmp/genode/toy2d_edm
  python -m launch.train --config=configs/toy2d_edm.py:runlocal --workdir=/tmp/genode/smoke

Other toys: `--config.data.distribution=8gaussians` (moons, 8gaussians, checkerboard,
swissroll, pinwheel).
"""

from configs import base


def get_config(arg=None):
  return base.toy2d_config("edm", arg)

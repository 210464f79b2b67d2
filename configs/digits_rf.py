"""rectified flow (Liu et al. 2023) on scikit-learn's bundled 8×8 digits (no download), small U-Net.

  python -m launch.train --config=configs/digits_rf.py --workdir=/tmp/genode/digits_rf
  python -m launch.train --config=configs/digits_rf.py:runlocal --workdir=/tmp/genode/smoke
"""

from configs import base


def get_config(arg=None):
  return base.digits_config("rf", arg)

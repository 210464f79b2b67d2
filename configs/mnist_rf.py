"""Rectified flow on MNIST 28×28, the mnist_edm U-Net (genode's settings, not a paper's).

  python -m launch.train --config=configs/mnist_rf.py --workdir=/tmp/genode/mnist_rf \
      --config.data.path=/data/mnist

Same network, data and schedule as `mnist_edm.py`; the rectified-flow row of EDM
Table 1 (t ~ U(0, 1), velocity loss).
"""

from configs import base
from configs import mnist_edm


def get_config(arg=None):
  config = mnist_edm.get_config(arg)
  config.formulation = base.formulation_config("rf")
  return config

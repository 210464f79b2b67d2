"""Glow (Kingma & Dhariwal 2018) on mnist: L = 2 (28 → 14 → 7), K = 16, width 512.

  python -m launch.train --config=configs/mnist_glow.py --workdir=/tmp/genode/mnist_glow \
      --config.data.path=/data/mnist
  python -m launch.train --config=configs/mnist_glow.py:spline --workdir=/tmp/genode/mnist_glow_spline \
      --config.data.path=/data/mnist
  python -m launch.evaluate --workdir=/tmp/genode/mnist_glow --eval=configs/eval_flows.py
  python -m launch.train --config=configs/mnist_glow.py:runlocal --workdir=/tmp/genode/smoke

The paper's settings: L levels × K steps of ActNorm (data-initialized) → invertible 1×1
conv (LU, eq. 10) → affine coupling y = (x + t)·σ(h_s + 2) with a zero-initialized last
conv (Table 1); Adamax lr 1e-3 as openai/glow. For accelerators; 5000 training images
are the validation split. Batch 64, lr 1e-3 with 1000 warm-up steps, 100 k steps.
`:spline` swaps in rational-quadratic spline couplings (Durkan et al. 2019); see
configs/_flows.py."""

from configs import _flows


def get_config(arg=None):
  return _flows.flow_config("glow", "mnist", arg)

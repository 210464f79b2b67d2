"""Glow (Kingma & Dhariwal 2018) on cifar10: the paper's CIFAR-10: L = 3, K = 32, width
512, affine, batch 64 per device.

  python -m launch.train --config=configs/cifar10_glow.py --workdir=/tmp/genode/cifar10_glow \
      --config.data.path=/data/cifar10
  python -m launch.train --config=configs/cifar10_glow.py:spline --workdir=/tmp/genode/cifar10_glow_spline \
      --config.data.path=/data/cifar10
  python -m launch.evaluate --workdir=/tmp/genode/cifar10_glow --eval=configs/eval_flows.py
  python -m launch.train --config=configs/cifar10_glow.py:runlocal --workdir=/tmp/genode/smoke

The paper's settings: L levels × K steps of ActNorm (data-initialized) → invertible 1×1
conv (LU, eq. 10) → affine coupling y = (x + t)·σ(h_s + 2) with a zero-initialized last
conv (Table 1); Adamax lr 1e-3 as openai/glow. For accelerators; 5000 training images
are the validation split. Batch 64, lr 1e-3 with 1000 warm-up steps, 100 k steps.
`:spline` swaps in rational-quadratic spline couplings (Durkan et al. 2019); see
configs/_flows.py."""

from configs import _flows


def get_config(arg=None):
  return _flows.flow_config("glow", "cifar10", arg)

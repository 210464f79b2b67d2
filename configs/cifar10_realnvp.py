"""RealNVP (Dinh, Sohl-Dickstein & Bengio 2016) on cifar10: 3 scales, width 64 (the
chrischute/real-nvp port's CIFAR setting).

  python -m launch.train --config=configs/cifar10_realnvp.py --workdir=/tmp/genode/cifar10_realnvp \
      --config.data.path=/data/cifar10
  python -m launch.train --config=configs/cifar10_realnvp.py:spline --workdir=/tmp/genode/cifar10_realnvp_spline \
      --config.data.path=/data/cifar10
  python -m launch.evaluate --workdir=/tmp/genode/cifar10_realnvp --eval=configs/eval_flows.py
  python -m launch.train --config=configs/cifar10_realnvp.py:runlocal --workdir=/tmp/genode/smoke

The paper's settings: affine couplings y = x·exp(a·tanh h_s) + t (eq. 7, the official
code's tanh-scale), multi-scale (§3.6): per scale 3 checkerboard couplings, squeeze, 3
channel couplings, factor out half; 4 checkerboard couplings at the last scale; the
logit preprocessing (§4.1, α = 0.05) with its Jacobian in log p. For accelerators; 5000
training images are the validation split. Batch 64, lr 1e-3 with 1000 warm-up steps, 100
k steps. `:spline` swaps in rational-quadratic spline couplings (Durkan et al. 2019);
see configs/_flows.py."""

from configs import _flows


def get_config(arg=None):
  return _flows.flow_config("realnvp", "cifar10", arg)

"""NICE (Dinh, Krueger & Bengio 2014) on cifar10: the paper's CIFAR-10 (§5): 4 couplings,
MLPs 4 × 2000, logistic prior.

  python -m launch.train --config=configs/cifar10_nice.py --workdir=/tmp/genode/cifar10_nice \
      --config.data.path=/data/cifar10
  python -m launch.evaluate --workdir=/tmp/genode/cifar10_nice --eval=configs/eval_flows.py
  python -m launch.train --config=configs/cifar10_nice.py:runlocal --workdir=/tmp/genode/smoke

The paper's settings: 4 additive couplings (eq. 5–6, odd/even halves alternating as the
official yaml's tile reordering and reversal), an MLP per coupling, the diagonal scaling
layer z = x·exp(D) (§3.3) and a logistic prior (§3.4). For accelerators; 5000 training
images are the validation split. Batch 64, lr 1e-3 with 1000 warm-up steps, 100 k steps.
See configs/_flows.py."""

from configs import _flows


def get_config(arg=None):
  return _flows.flow_config("nice", "cifar10", arg)

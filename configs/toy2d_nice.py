"""NICE (Dinh, Krueger & Bengio 2014) on toy2d: 4 couplings, MLPs 4 × 128.

  python -m launch.train --config=configs/toy2d_nice.py --workdir=/tmp/genode/toy2d_nice
  python -m launch.evaluate --workdir=/tmp/genode/toy2d_nice --eval=configs/eval_flows.py
  python -m launch.train --config=configs/toy2d_nice.py:runlocal --workdir=/tmp/genode/smoke

The paper's settings: 4 additive couplings (eq. 5–6, odd/even halves alternating as the
official yaml's tile reordering and reversal), an MLP per coupling, the diagonal scaling
layer z = x·exp(D) (§3.3) and a logistic prior (§3.4). Checkerboard by default
(`--config.data.distribution=8gaussians` for the other toy with a known density); 5000
steps of batch 512, fresh samples each step; `launch.evaluate` reports the test NLL in
nats against the true entropy (checkerboard ln 32 ≈ 3.466, 8gaussians ≈ 2.83). See
configs/_flows.py."""

from configs import _flows


def get_config(arg=None):
  return _flows.flow_config("nice", "toy2d", arg)

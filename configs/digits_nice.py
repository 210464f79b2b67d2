"""NICE (Dinh, Krueger & Bengio 2014) on digits: 4 couplings, MLPs 4 × 256, RealNVP's logit
preprocessing in front (α = 0.05).

  python -m launch.train --config=configs/digits_nice.py --workdir=/tmp/genode/digits_nice
  python -m launch.evaluate --workdir=/tmp/genode/digits_nice --eval=configs/eval_flows.py
  python -m launch.train --config=configs/digits_nice.py:runlocal --workdir=/tmp/genode/smoke

The paper's settings: 4 additive couplings (eq. 5–6, odd/even halves alternating as the
official yaml's tile reordering and reversal), an MLP per coupling, the diagonal scaling
layer z = x·exp(D) (§3.3) and a logistic prior (§3.4). 1300 of the 1500 training digits
train, 200 are the validation split that selects the checkpoint (held-out bits/dim every
50 steps, `selection.json`; training stops after 6 validations without improvement, at
most 3000 steps); the test split (297) is only for `launch.evaluate`. Batch 64, Adam lr
1e-3 EMA half-life 2000 images. See configs/_flows.py."""

from configs import _flows


def get_config(arg=None):
  return _flows.flow_config("nice", "digits", arg)

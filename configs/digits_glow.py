"""Glow (Kingma & Dhariwal 2018) on digits: L = 2 (8 → 4 → 2), K = 8, width 128, the logit
preprocessing in front.

  python -m launch.train --config=configs/digits_glow.py --workdir=/tmp/genode/digits_glow
  python -m launch.train --config=configs/digits_glow.py:spline --workdir=/tmp/genode/digits_glow_spline
  python -m launch.evaluate --workdir=/tmp/genode/digits_glow --eval=configs/eval_flows.py
  python -m launch.train --config=configs/digits_glow.py:runlocal --workdir=/tmp/genode/smoke

The paper's settings: L levels × K steps of ActNorm (data-initialized) → invertible 1×1
conv (LU, eq. 10) → affine coupling y = (x + t)·σ(h_s + 2) with a zero-initialized last
conv (Table 1); Adamax as openai/glow (here lr 3e-3: at 1e-3 the held-out bits/dim still
fell at 3000 steps). 1300 of the 1500 training digits train, 200 are the validation split
that selects the checkpoint (held-out bits/dim every 50 steps, `selection.json`; training
stops after 6 validations without improvement, at most 10 000 steps); the test split
(297) is only for `launch.evaluate`. Batch 64, EMA half-life 2000 images. `:spline` swaps
in rational-quadratic spline couplings (Durkan et al. 2019); see configs/_flows.py."""

from configs import _flows


def get_config(arg=None):
  return _flows.flow_config("glow", "digits", arg)

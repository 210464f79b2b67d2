"""RealNVP (Dinh, Sohl-Dickstein & Bengio 2016) on digits: 2 scales, conditioner width 64
(doubled per scale).

  python -m launch.train --config=configs/digits_realnvp.py --workdir=/tmp/genode/digits_realnvp
  python -m launch.train --config=configs/digits_realnvp.py:spline --workdir=/tmp/genode/digits_realnvp_spline
  python -m launch.evaluate --workdir=/tmp/genode/digits_realnvp --eval=configs/eval_flows.py
  python -m launch.train --config=configs/digits_realnvp.py:runlocal --workdir=/tmp/genode/smoke

The paper's settings: affine couplings y = x·exp(a·tanh h_s) + t (eq. 7, the official
code's tanh-scale), multi-scale (§3.6): per scale 3 checkerboard couplings, squeeze, 3
channel couplings, factor out half; 4 checkerboard couplings at the last scale; the
logit preprocessing (§4.1, α = 0.05) with its Jacobian in log p. 1300 of the 1500
training digits train, 200 are the validation split that selects the checkpoint (held-
out bits/dim every 50 steps, `selection.json`; training stops after 6 validations
without improvement, at most 3000 steps); the test split (297) is only for
`launch.evaluate`. Batch 64, Adam lr 1e-3 EMA half-life 2000 images.
`:spline` swaps in rational-quadratic spline couplings (Durkan et al. 2019); see
configs/_flows.py."""

from configs import _flows


def get_config(arg=None):
  return _flows.flow_config("realnvp", "digits", arg)

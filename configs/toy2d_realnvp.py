"""RealNVP (Dinh, Sohl-Dickstein & Bengio 2016) on toy2d: 8 alternating couplings, MLPs 2 ×
128.

  python -m launch.train --config=configs/toy2d_realnvp.py --workdir=/tmp/genode/toy2d_realnvp
  python -m launch.train --config=configs/toy2d_realnvp.py:spline --workdir=/tmp/genode/toy2d_realnvp_spline
  python -m launch.evaluate --workdir=/tmp/genode/toy2d_realnvp --eval=configs/eval_flows.py
  python -m launch.train --config=configs/toy2d_realnvp.py:runlocal --workdir=/tmp/genode/smoke

The paper's settings: affine couplings y = x·exp(a·tanh h_s) + t (eq. 7, the official
code's tanh-scale), multi-scale (§3.6): per scale 3 checkerboard couplings, squeeze, 3
channel couplings, factor out half; 4 checkerboard couplings at the last scale; the
logit preprocessing (§4.1, α = 0.05) with its Jacobian in log p. Checkerboard by default
(`--config.data.distribution=8gaussians` for the other toy with a known density); 5000
steps of batch 512, fresh samples each step; `launch.evaluate` reports the test NLL in
nats against the true entropy (checkerboard ln 32 ≈ 3.466, 8gaussians ≈ 2.83). `:spline`
swaps in rational-quadratic spline couplings (Durkan et al. 2019); see
configs/_flows.py."""

from configs import _flows


def get_config(arg=None):
  return _flows.flow_config("realnvp", "toy2d", arg)

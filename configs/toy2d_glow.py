"""Glow (Kingma & Dhariwal 2018) on toy2d: 8 steps (no squeeze on vectors), MLP
conditioners 2 × 128.

  python -m launch.train --config=configs/toy2d_glow.py --workdir=/tmp/genode/toy2d_glow
  python -m launch.train --config=configs/toy2d_glow.py:spline --workdir=/tmp/genode/toy2d_glow_spline
  python -m launch.evaluate --workdir=/tmp/genode/toy2d_glow --eval=configs/eval_flows.py
  python -m launch.train --config=configs/toy2d_glow.py:runlocal --workdir=/tmp/genode/smoke

The paper's settings: L levels × K steps of ActNorm (data-initialized) → invertible 1×1
conv (LU, eq. 10) → affine coupling y = (x + t)·σ(h_s + 2) with a zero-initialized last
conv (Table 1); Adamax lr 1e-3 as openai/glow. Checkerboard by default
(`--config.data.distribution=8gaussians` for the other toy with a known density); 5000
steps of batch 512, fresh samples each step; `launch.evaluate` reports the test NLL in
nats against the true entropy (checkerboard ln 32 ≈ 3.466, 8gaussians ≈ 2.83). `:spline`
swaps in rational-quadratic spline couplings (Durkan et al. 2019); see
configs/_flows.py."""

from configs import _flows


def get_config(arg=None):
  return _flows.flow_config("glow", "toy2d", arg)

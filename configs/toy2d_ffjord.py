"""FFJORD (Grathwohl et al. 2019) on 2-D toy data: a CNF trained by maximum likelihood.

  python -m launch.train --config=configs/toy2d_ffjord.py:8gaussians \
      --workdir=/tmp/genode/toy2d_ffjord_8g
  python -m launch.train --config=configs/toy2d_ffjord.py:checkerboard \
      --workdir=/tmp/genode/toy2d_ffjord_cb
  python -m launch.evaluate --workdir=/tmp/genode/toy2d_ffjord_cb \
      --eval.solvers="('heun',)" --eval.steps="(8,)" --eval.adaptive_solvers="('dopri5',)" \
      --eval.tolerances="(1e-5,)" --eval.nll.num_examples=2000 --eval.nll.batch_size=500
  python -m launch.train --config=configs/toy2d_ffjord.py:runlocal --workdir=/tmp/genode/smoke

The argument is the distribution (8gaussians | checkerboard | any toy2d one; default
8gaussians), optionally followed by ",runlocal" (e.g. `:checkerboard,runlocal`).

The paper's toy model (FFJORD §4.1, the repository's train_toy.py): f(x, t) an MLP of 3
concatsquash layers of 64 units, Adam lr 1e-3, batch 200, 10 000 iterations, Hutchinson
trace with a Rademacher probe in training, Dopri5 at rtol = atol = 1e-5. Here (this
2-core CPU): the same network with tanh, batch 256, 10 000 steps, Adam lr 1e-3 with cosine decay, a
fixed-step Tsit5 solve (`cnf.train.num_steps`) with the checkpointed adjoint in training
(genode/ffjord.py says why), and the adaptive Dopri5 solve with the exact trace for the
evaluation's NLL and the samples. Each run costs ≈590 s of CPU (10 000 steps of ≈0.06 s).
Measured (WORKSPACE): test NLL 2.783 nats on 8gaussians (the true NLL of the same points
2.783), 3.569 nats on checkerboard (ln 32 = 3.466). The checkerboard row continues that
run for 5000 steps from its EMA parameters (fresh Adam and EMA, cosine from 3e-4; ≈380 s
of CPU more), to 3.556 nats (0.090 ± 0.006 above ln 32):

  python -m launch.train --config=configs/toy2d_ffjord.py:checkerboard \
      --workdir=/tmp/genode/toy2d_ffjord_cb_ft --config.init_from.workdir=/tmp/genode/toy2d_ffjord_cb \
      --config.optim.learning_rate=3e-4 --config.train.num_steps=5000

RNODE's regularizer (Finlay et al. 2020) is `--config.cnf.kinetic_weight=λ_K
--config.cnf.jacobian_weight=λ_J` (0 = off).
"""

import ml_collections

from configs import _ffjord
from configs import base


def get_config(arg=None):
  parts = [p for p in (arg or "").split(",") if p]
  runlocal = "runlocal" in parts
  names = [p for p in parts if p != "runlocal"]
  if len(names) > 1:
    raise ValueError(f"Config argument {arg!r}: one distribution at most, then ',runlocal'")
  config = _ffjord.ffjord_config(hidden_dims=(64, 64, 64), activation="tanh", num_levels=0,
                                 train_solver="tsit5", train_steps=8)
  config.data = ml_collections.ConfigDict(dict(
      name="toy2d", distribution=names[0] if names else "8gaussians"))
  config.optim.update(learning_rate=1e-3, warmup_steps=100, decay="cosine",
                      ema_half_life_images=50_000.0)
  config.train.update(num_steps=10_000, batch_size=256, log_every=200, checkpoint_every=1000,
                      sample_every=5000)
  config.sampler.num_samples = 2000
  return base.apply_arg(config, "runlocal" if runlocal else None, hidden_dims=(16, 16))

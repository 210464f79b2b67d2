"""FFJORD (Grathwohl et al. 2019) on scikit-learn's bundled 8×8 digits: a CNF, bits/dim.

  python -m launch.train --config=configs/digits_ffjord.py \
      --workdir=/tmp/genode/digits_ffjord
  python -m launch.evaluate --workdir=/tmp/genode/digits_ffjord \
      --eval.solvers="('heun',)" --eval.steps="(8,)" --eval.adaptive_solvers="('dopri5',)" \
      --eval.tolerances="(1e-5,)" --eval.nll.num_examples=360 --eval.nll.batch_size=120
  python -m launch.train --config=configs/digits_ffjord.py:runlocal --workdir=/tmp/genode/smoke

The paper's image CNFs (FFJORD §4.2: MNIST, CIFAR-10) are multiscale stacks of CNFs whose
f(x, t) are concatsquash conv nets (64 channels, softplus), trained with one Rademacher
Hutchinson probe, Dopri5 at rtol = atol = 1e-5, Adam lr 1e-3, batch 200. Here (8×8 = 64
dimensions, a 2-core CPU): one CNF whose f is a concatsquash MLP on the flattened image
(3 layers of 256, tanh), uniform dequantization of the 8-bit data in training
(cnf.num_levels = 256; the same protocol as launch.evaluate's NLL, genode/bits.py), 8
fixed Tsit5 steps with the checkpointed adjoint (genode/ffjord.py says why), batch 128,
1500 steps (≈0.3 s of CPU each: 444 s of CPU measured), Adam lr 1e-3 with cosine decay;
the evaluation's NLL uses the exact trace (64 JVPs per evaluation) with the adaptive
Dopri5 solve. Measured (WORKSPACE): 7.09 ± 0.02 test bits/dim, worse than a full
Gaussian's 6.46: under-trained at this budget.
"""

import ml_collections

from configs import _ffjord
from configs import base


def get_config(arg=None):
  config = _ffjord.ffjord_config(hidden_dims=(256, 256, 256), activation="tanh",
                                 num_levels=256, train_solver="tsit5", train_steps=8)
  config.cnf.whitening = "full"
  config.data = ml_collections.ConfigDict(dict(name="digits", validation_examples=200))
  config.optim.update(learning_rate=1e-3, warmup_steps=100, decay="cosine",
                      ema_half_life_images=20_000.0)
  config.train.update(num_steps=1500, batch_size=128, log_every=100, checkpoint_every=500,
                      sample_every=1500, keep_checkpoints=2, select_by="val_nll",
                      validate_every=300)
  config.sampler.num_samples = 64
  return base.apply_arg(config, arg, hidden_dims=(16, 16))

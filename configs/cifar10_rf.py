"""Rectified flow (1-rectified flow) on CIFAR-10 32×32, DDPM++ U-Net (Liu et al. 2023).

  python -m launch.train --config=configs/cifar10_rf.py --workdir=/tmp/genode/cifar10_rf \
      --config.data.path=/data/cifar10

Published hyperparameters, from gnobitab/RectifiedFlow
`ImageGeneration/configs/default_cifar10_configs.py` and
`ImageGeneration/configs/rectified_flow/cifar10_rf_gaussian_ddpmpp.py`: batch 128,
Adam(β1 = 0.9, ε = 1e-8), lr 2e-4 with 5000 warm-up steps, gradient clip 1.0, no weight
decay, 1.3 M iterations, EMA rate 0.999999 per step (= a half-life of
128·ln 2 / −ln 0.999999 ≈ 88.7 Mimg), dropout 0.15; U-Net nf 128, multipliers
(1, 2, 2, 2), 4 blocks per resolution, attention at 16×16, positional embedding;
t ~ U(0, 1). The paper samples with RK45 (tolerance 1e-5): `launch.sample --solver=dopri5`.
Not reproduced here: the repository's random horizontal flips.
"""

import math

from configs import base

RF_BATCH = 128
RF_EMA_RATE = 0.999999


def get_config(arg=None):
  config = base.get_base_config()
  config.formulation = base.formulation_config("rf")
  config.model = base.ml_collections.ConfigDict(dict(
      name="unet", base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=4,
      attention_resolutions=(16,), dropout=0.15, embedding_type="positional",
      num_classes=0, label_dropout=0.0))
  config.data = base.ml_collections.ConfigDict(dict(name="cifar10", path="data/cifar10"))
  config.optim.update(
      optimizer="adam", learning_rate=2e-4, b1=0.9, b2=0.999, eps=1e-8, warmup_steps=5000,
      decay="constant", grad_clip_norm=1.0, weight_decay=0.0,
      ema_half_life_images=RF_BATCH * math.log(2) / -math.log(RF_EMA_RATE))
  config.train.update(num_steps=1_300_000, batch_size=RF_BATCH, log_every=500,
                      checkpoint_every=10_000, sample_every=10_000, keep_checkpoints=3)
  config.sampler.update(solver="heun", grid="karras", steps=18, num_samples=64)
  return base.apply_arg(config, arg, **base.IMAGE_RUNLOCAL_MODEL)

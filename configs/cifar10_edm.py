"""EDM on CIFAR-10 32×32, unconditional DDPM++ (Karras et al. 2022, Table 2 "EDM" column).

  python -m launch.train --config=configs/cifar10_edm.py --workdir=/tmp/genode/cifar10_edm \
      --config.data.path=/data/cifar10

Published hyperparameters, from NVlabs/edm `train.py` and `training/training_loop.py`
(defaults for `--arch=ddpmpp --precond=edm`): batch 512, Adam(β=(0.9, 0.999), ε=1e-8),
lr 1e-3 ramped up linearly over 10 Mimg (`lr_rampup_kimg=10000`), 200 Mimg
(390 625 steps), EMA half-life 0.5 Mimg, dropout 0.13, no gradient clipping; SongUNet
DDPM++: 128 channels, multipliers (2, 2, 2), 4 blocks per resolution, attention at 16×16,
positional noise embedding; σ_data = 0.5, P_mean = −1.2, P_std = 1.2.
EMA ramp-up as in EDM (`ema_rampup_ratio=0.05`). Not reproduced here: EDM's geometric
augmentation (`--augment=0.12`, which its FID 1.97 uses).
Sampling: Heun, 18 steps (35 NFE), Karras grid ρ = 7 (EDM Algorithm 1).
"""

from configs import base

EDM_BATCH = 512


def get_config(arg=None):
  config = base.get_base_config()
  config.formulation = base.formulation_config("edm")
  config.model = base.ml_collections.ConfigDict(dict(
      name="unet", base_channels=128, channel_mults=(2, 2, 2), num_res_blocks=4,
      attention_resolutions=(16,), dropout=0.13, embedding_type="positional",
      num_classes=0, label_dropout=0.0))
  config.data = base.ml_collections.ConfigDict(dict(name="cifar10", path="data/cifar10"))
  config.optim.update(optimizer="adam", learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8,
                      warmup_steps=10_000_000 // EDM_BATCH, decay="constant",
                      grad_clip_norm=0.0, weight_decay=0.0,
                      ema_half_life_images=500_000.0, ema_rampup_ratio=0.05)
  config.train.update(num_steps=200_000_000 // EDM_BATCH, batch_size=EDM_BATCH,
                      log_every=500, checkpoint_every=10_000, sample_every=10_000,
                      keep_checkpoints=3)
  config.sampler.update(solver="heun", grid="karras", steps=18, num_samples=64)
  return base.apply_arg(config, arg, **base.IMAGE_RUNLOCAL_MODEL)

"""EDM on MNIST 28×28, a reduced DDPM++ U-Net (genode's settings; no published EDM MNIST run).

  python -m launch.train --config=configs/mnist_edm.py --workdir=/tmp/genode/mnist_edm \
      --config.data.path=/data/mnist

Resolutions 28 → 14 → 7 (multipliers (1, 2, 2)), attention at 7×7; EDM's optimizer
and loss (Adam, σ_data = 0.5, P_mean = −1.2, P_std = 1.2) at batch 128 with lr 5e-4 and
an EMA half-life of 0.1 Mimg; 100 k steps (12.8 Mimg).
"""

from configs import base


def get_config(arg=None):
  config = base.get_base_config()
  config.formulation = base.formulation_config("edm")
  config.model = base.ml_collections.ConfigDict(dict(
      name="unet", base_channels=64, channel_mults=(1, 2, 2), num_res_blocks=2,
      attention_resolutions=(7,), dropout=0.1, embedding_type="positional",
      num_classes=0, label_dropout=0.0))
  config.data = base.ml_collections.ConfigDict(dict(name="mnist", path="data/mnist"))
  config.optim.update(optimizer="adam", learning_rate=5e-4, warmup_steps=1000,
                      decay="constant", grad_clip_norm=1.0, ema_half_life_images=100_000.0)
  config.train.update(num_steps=100_000, batch_size=128, log_every=500,
                      checkpoint_every=5000, sample_every=5000, keep_checkpoints=3)
  config.sampler.update(solver="heun", grid="karras", steps=18, num_samples=64)
  return base.apply_arg(config, arg, **base.IMAGE_RUNLOCAL_MODEL)

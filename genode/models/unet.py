"""DDPM++ U-Net (Song et al. 2021), as EDM's `SongUNet` (Karras et al. 2022, networks.py).

NHWC throughout. With `base_channels=128, channel_mults=(2, 2, 2), num_res_blocks=4,
attention_resolutions=(16,), dropout=0.13` at 32×32×3 this is EDM's CIFAR-10 DDPM++
(≈56M parameters). The layout, per resolution level ℓ (spatial size H/2^ℓ):

  encoder: [3×3 conv (ℓ = 0) | down ResBlock (ℓ > 0)], then `num_res_blocks` ResBlocks
           (self-attention after each if the size is in `attention_resolutions`);
  decoder: [2 ResBlocks, the first with attention (lowest level) | up ResBlock], then
           `num_res_blocks + 1` ResBlocks on [x, skip] (attention after the last);
  output:  GroupNorm → SiLU → zero-initialized 3×3 conv to the input channels.

ResBlock: h = conv3×3(SiLU(GroupNorm(x))) (resampled); h = SiLU(GroupNorm(h + A·emb))
(with `scale_shift`: SiLU(GroupNorm(h)·(1 + scale) + shift)); h = conv3×3(dropout(h))
(near-zero init); out = (h + skip(x))·√½, skip a resampled 1×1 projection if needed.
Downsampling is 2×2 average pooling, upsampling nearest neighbour (EDM's
`resample_filter=[1, 1]`). Every level but the last halves the size, so H and W must
be divisible by 2^(len(channel_mults) − 1): 8×8 with (1, 2) → 8, 4; MNIST's 28×28 with
(1, 2, 2) → 28, 14, 7 (no padding); 32×32 with (2, 2, 2) → 32, 16, 8.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from genode.models.embeddings import MappingNetwork, get_embedding

# EDM's initializers: xavier-uniform, near-zero for the last conv of a residual branch.
_init = nn.initializers.xavier_uniform()
_init_zero = nn.initializers.variance_scaling(1e-10, "fan_avg", "uniform")
_init_attn = nn.initializers.variance_scaling(0.2, "fan_avg", "uniform")


def num_groups(channels: int, max_groups: int = 32, min_channels_per_group: int = 4) -> int:
  """GroupNorm groups for `channels`: the largest divisor ≤ min(32, C/4), at least 1."""
  upper = max(1, min(max_groups, channels // min_channels_per_group))
  return next(g for g in range(upper, 0, -1) if channels % g == 0)


def _norm(x: jax.Array, name: str) -> jax.Array:
  return nn.GroupNorm(num_groups=num_groups(x.shape[-1]), epsilon=1e-6, name=name)(x)


def _resample(x: jax.Array, up: bool, down: bool) -> jax.Array:
  """Nearest ×2 upsampling or 2×2 average pooling of (B, H, W, C)."""
  if up:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  if down:
    return nn.avg_pool(x, (2, 2), strides=(2, 2))
  return x


class ResBlock(nn.Module):
  """DDPM++ residual block with the noise embedding added, optional self-attention."""

  out_channels: int
  up: bool = False
  down: bool = False
  attention: bool = False
  num_heads: int = 1
  dropout: float = 0.0
  scale_shift: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, emb: jax.Array, train: bool) -> jax.Array:
    """x (B, H, W, C_in), emb (B, E) → (B, H', W', out_channels)."""
    skip_scale = math.sqrt(0.5)
    orig = x
    h = _resample(nn.silu(_norm(x, "norm0")), self.up, self.down)
    h = nn.Conv(self.out_channels, (3, 3), kernel_init=_init, name="conv0")(h)
    params = nn.Dense(self.out_channels * (2 if self.scale_shift else 1), kernel_init=_init,
                      name="affine")(emb)[:, None, None, :]
    if self.scale_shift:  # EDM's adaptive_scale (ADM): SiLU(shift + norm(h)·(1 + scale))
      scale, shift = jnp.split(params, 2, axis=-1)
      h = nn.silu(shift + _norm(h, "norm1") * (1 + scale))
    else:  # DDPM++: SiLU(norm(h + emb))
      h = nn.silu(_norm(h + params, "norm1"))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.Conv(self.out_channels, (3, 3), kernel_init=_init_zero, name="conv1")(h)
    skip = _resample(orig, self.up, self.down)
    if self.out_channels != x.shape[-1] or self.up or self.down:
      skip = nn.Conv(self.out_channels, (1, 1), kernel_init=_init, name="skip")(skip)
    x = (h + skip) * skip_scale
    if self.attention:
      x = (x + SelfAttention(self.num_heads, name="attention")(x)) * skip_scale
    return x


class SelfAttention(nn.Module):
  """Multi-head self-attention over the H·W positions (GroupNorm, 1×1 qkv and proj)."""

  num_heads: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x (B, H, W, C) → the attention branch (B, H, W, C); the caller adds the residual."""
    b, h, w, c = x.shape
    if c % self.num_heads:
      raise ValueError(f"{c} channels do not split into {self.num_heads} attention heads")
    qkv = nn.Conv(3 * c, (1, 1), kernel_init=_init_attn, name="qkv")(_norm(x, "norm"))
    q, k, v = jnp.split(qkv.reshape(b, h * w, 3 * self.num_heads, c // self.num_heads), 3, axis=2)
    a = nn.dot_product_attention(q, k, v)  # softmax(q·kᵀ/√d)·v, (B, HW, heads, C/heads)
    return nn.Conv(c, (1, 1), kernel_init=_init_zero, name="proj")(a.reshape(b, h, w, c))


class UNet(nn.Module):
  """DDPM++ U-Net F(x; c_noise, label): (B, H, W, C) → (B, H, W, C).

  Attributes:
    base_channels: channels of level 0 are base_channels·channel_mults[0], etc.
    channel_mults: per-resolution channel multipliers; len = number of levels.
    num_res_blocks: residual blocks per level in the encoder (decoder: one more).
    attention_resolutions: spatial sizes (H at that level) with self-attention.
    dropout: dropout rate in the residual blocks (rng stream "dropout").
    embedding_type: "positional" (DDPM++) | "fourier" (NCSN++).
    num_classes: 0 = unconditional; otherwise labels 0..num_classes−1 plus a null class.
    label_dropout: probability of replacing a label with the null class in training
      (classifier-free guidance; `class_labels=None` at sampling = unconditional).
    num_heads: attention heads.
    scale_shift: the embedding scales and shifts the normalized activations (ADM,
      EDM's `adaptive_scale`) instead of being added before the norm (DDPM++).
    embedding_mult: the embedding has base_channels·embedding_mult features (EDM: 4).
  """

  base_channels: int = 128
  channel_mults: Sequence[int] = (2, 2, 2)
  num_res_blocks: int = 4
  attention_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  embedding_type: str = "positional"
  num_classes: int = 0
  label_dropout: float = 0.0
  num_heads: int = 1
  scale_shift: bool = False
  embedding_mult: int = 4

  def check_input_shape(self, shape: Sequence[int]) -> None:
    """Raises ValueError unless `shape` = (B, H, W, C) with H, W divisible by 2^(levels−1)."""
    get_embedding(self.embedding_type)  # validates the name
    if len(shape) != 4:
      raise ValueError(f"UNet expects x of shape (B, H, W, C) (NHWC), got {tuple(shape)}")
    factor = 2 ** (len(self.channel_mults) - 1)
    _, h, w, _ = shape
    if h % factor or w % factor:
      sizes = [h / 2**level for level in range(len(self.channel_mults))]
      raise ValueError(
          f"A {h}×{w} image cannot pass through {len(self.channel_mults)} U-Net levels "
          f"(channel_mults={tuple(self.channel_mults)}; sizes {sizes}): H and W must be "
          f"divisible by {factor}. Use fewer levels or pad the images.")

  @nn.compact
  def __call__(self, x: jax.Array, noise_labels: jax.Array,
               class_labels: jax.Array | None = None, train: bool = False) -> jax.Array:
    """x (B, H, W, C), noise_labels (B,), class_labels int (B,) or None → F (B, H, W, C)."""
    self.check_input_shape(x.shape)
    block = lambda ch, **kw: ResBlock(ch, num_heads=self.num_heads, dropout=self.dropout,
                                      scale_shift=self.scale_shift, **kw)
    emb = MappingNetwork(self.base_channels, self.base_channels * self.embedding_mult,
                         self.embedding_type, self.num_classes, self.label_dropout,
                         name="mapping")(noise_labels, class_labels, x.shape[0], train)
    num_levels = len(self.channel_mults)
    in_channels = x.shape[-1]

    # Encoder.
    h = nn.Conv(self.base_channels, (3, 3), kernel_init=_init, name="enc_conv")(x)
    skips = [h]
    for level, mult in enumerate(self.channel_mults):
      res = x.shape[1] >> level
      if level > 0:
        h = block(h.shape[-1], down=True, name=f"enc{res}_down")(h, emb, train)
        skips.append(h)
      for i in range(self.num_res_blocks):
        attn = res in self.attention_resolutions
        h = block(self.base_channels * mult, attention=attn,
                  name=f"enc{res}_block{i}")(h, emb, train)
        skips.append(h)

    # Decoder.
    for level in reversed(range(num_levels)):
      res = x.shape[1] >> level
      if level == num_levels - 1:
        h = block(h.shape[-1], attention=True, name=f"dec{res}_in0")(h, emb, train)
        h = block(h.shape[-1], name=f"dec{res}_in1")(h, emb, train)
      else:
        h = block(h.shape[-1], up=True, name=f"dec{res}_up")(h, emb, train)
      for i in range(self.num_res_blocks + 1):
        attn = i == self.num_res_blocks and res in self.attention_resolutions
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = block(self.base_channels * self.channel_mults[level], attention=attn,
                  name=f"dec{res}_block{i}")(h, emb, train)

    # Output: zero-initialized, so F = 0 and D = c_skip·x at initialization.
    h = nn.silu(_norm(h, "out_norm"))
    return nn.Conv(in_channels, (3, 3), kernel_init=nn.initializers.zeros, name="out_conv")(h)

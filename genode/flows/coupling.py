"""Masked coupling layers (NICE §3.2, RealNVP §3.3–3.4, Glow Table 1, NSF §3).

With a binary mask m (1 = conditioning half, passed through):

  y = m ⊙ x + (1 − m) ⊙ g(x; NN(m ⊙ x)),   log|det J| = Σ (1 − m) ⊙ log|g'|,

which has a triangular Jacobian. The inverse uses that m ⊙ y = m ⊙ x. For images the
conditioner also sees the mask as an extra channel (official RealNVP code).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from genode.flows.base import Bijector, sum_per_sample
from genode.flows.conditioners import ConvConditioner, MLPConditioner
from genode.flows.masks import make_mask


class Coupling(Bijector):
  """A coupling layer on (B, d) vectors (MLP conditioner) or (B, H, W, C) images (conv).

  Attributes:
    mask: "checkerboard" (images) | "channel" | "alternate" (vectors).
    parity: 0 or 1, which half is passed through.
    transform: an elementwise transform object (genode.flows.transforms).
    hidden: conditioner width.
    num_hidden_layers: hidden layers of the MLP conditioner (vectors only).
  """

  mask: str
  parity: int
  transform: Any
  hidden: int = 64
  num_hidden_layers: int = 2

  @nn.compact
  def __call__(self, x: jax.Array, inverse: bool = False) -> tuple[jax.Array, jax.Array]:
    if x.ndim not in (2, 4):
      raise ValueError(f"Coupling expects (B, d) or (B, H, W, C) inputs, got shape {x.shape}")
    mask = jnp.asarray(make_mask(self.mask, x.shape[1:], self.parity), x.dtype)
    num_params = self.transform.params_per_element
    zero_init = self.transform.zero_init_conditioner
    extra = self.transform.extra_params(self)
    conditioning = x * mask
    if x.ndim == 2:
      h = MLPConditioner(self.hidden, self.num_hidden_layers, x.shape[-1] * num_params,
                         zero_init, name="conditioner")(conditioning)
    else:
      inputs = jnp.concatenate(
          [conditioning, jnp.broadcast_to(mask[..., :1], x.shape[:-1] + (1,))], axis=-1)
      h = ConvConditioner(self.hidden, x.shape[-1] * num_params, zero_init,
                          name="conditioner")(inputs)
    h = h.reshape(x.shape + (num_params,))
    transformed, log_det = self.transform(x, h, extra, inverse)
    y = mask * x + (1.0 - mask) * transformed
    return y, sum_per_sample((1.0 - mask) * log_det)

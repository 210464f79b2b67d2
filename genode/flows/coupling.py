"""Masked coupling layers (NICE §3.2, RealNVP §3.3–3.4, Glow Table 1, NSF §3).

With a binary mask m (1 = conditioning half, passed through):

  y = m ⊙ x + (1 − m) ⊙ g(x; NN(m ⊙ x)),   log|det J| = Σ (1 − m) ⊙ log|g'|,

which has a triangular Jacobian. The inverse uses that m ⊙ y = m ⊙ x. Checkerboard
couplings are computed with the mask (the conditioner also sees it as an extra channel,
as the official RealNVP code); channel and alternating masks split the last axis, so the
conditioner takes only the passed-through half and outputs only the transformed half's
parameters.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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
    if self.mask == "checkerboard" and x.ndim != 4:
      raise ValueError(f"Coupling(mask='checkerboard') needs an image input (B, H, W, C), "
                       f"got shape {x.shape}; use mask='alternate' for vectors")
    mask = make_mask(self.mask, x.shape[1:], self.parity)
    extra = self.transform.extra_params(self)
    if self.mask == "checkerboard":
      return self._masked(x, jnp.asarray(mask, x.dtype), extra, inverse)
    # Channel and alternating masks split the last axis: the conditioner sees the
    # passed-through entries only and outputs parameters for the others (NICE eq. 4).
    last_axis = mask.reshape(-1, mask.shape[-1])[0]
    passed, changed = np.nonzero(last_axis)[0], np.nonzero(1.0 - last_axis)[0]
    h = self._conditioner(x[..., passed], len(changed))
    y_changed, log_det = self.transform(x[..., changed], h, extra, inverse)
    return x.at[..., changed].set(y_changed), sum_per_sample(log_det)

  def _conditioner(self, inputs: jax.Array, num_outputs: int) -> jax.Array:
    """NN(inputs) reshaped to (..., num_outputs, P) parameters of the transform."""
    num_params = self.transform.params_per_element
    zero_init = self.transform.zero_init_conditioner
    if inputs.ndim == 2:
      h = MLPConditioner(self.hidden, self.num_hidden_layers, num_outputs * num_params,
                         zero_init, name="conditioner")(inputs)
    else:
      h = ConvConditioner(self.hidden, num_outputs * num_params, zero_init,
                          name="conditioner")(inputs)
    return h.reshape(inputs.shape[:-1] + (num_outputs, num_params))

  def _masked(self, x, mask, extra, inverse):
    """y = m ⊙ x + (1 − m) ⊙ g(x; NN(m ⊙ x, m)) (RealNVP eq. 9), the mask as a channel."""
    mask = mask[None]  # (1, H, W, C): broadcast over the batch explicitly
    inputs = jnp.concatenate(
        [x * mask, jnp.broadcast_to(mask[..., :1], x.shape[:-1] + (1,))], axis=-1)
    h = self._conditioner(inputs, x.shape[-1])
    transformed, log_det = self.transform(x, h, extra, inverse)
    y = mask * x + (1.0 - mask) * transformed
    return y, sum_per_sample((1.0 - mask) * log_det)

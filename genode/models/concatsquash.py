"""FFJORD's vector-field network: an MLP of concatsquash layers (Grathwohl et al. 2019).

f(x, t): x (B, ...) → (B, ...), flattened to (B, d) inside. Each layer is FFJORD's
`ConcatSquashLinear` (`lib/layers/diffeq_layers/basic.py`):

    h ← (W h + b) · sigmoid(a t + c) + e t,

a time-dependent gate and bias on every linear map, followed by a smooth activation
(tanh or softplus, the paper's choices) between layers. A smooth activation matters for
a CNF: the divergence ∇·f is a sum of second-order terms of the network, and ReLU makes
it piecewise constant and the ODE non-smooth. The last layer's W and e
are zero-initialized, so f = 0 at initialization (the identity flow, log p = log p_prior).

It has the call signature of every genode network (`genode.models`):
`apply(variables, x, noise_labels, class_labels=None, train=False)`, with `noise_labels`
(B,) the ODE time t of each sample (the CNF family passes t broadcast over the batch).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {"tanh": jnp.tanh, "softplus": jax.nn.softplus, "silu": jax.nn.silu}


class ConcatSquashDense(nn.Module):
  """(W h + b)·sigmoid(a t + c) + e t: h (B, n), t (B,) → (B, features)."""

  features: int
  zero_init: bool = False  # W = 0 and e = 0: the layer outputs 0 at initialization

  @nn.compact
  def __call__(self, h: jax.Array, t: jax.Array) -> jax.Array:
    t = t[:, None].astype(h.dtype)
    gate = nn.Dense(self.features, name="gate")(t)
    zeros = {"kernel_init": nn.initializers.zeros} if self.zero_init else {}
    bias = nn.Dense(self.features, use_bias=False, name="bias", **zeros)(t)
    return nn.Dense(self.features, name="linear", **zeros)(h) * (
        jax.nn.sigmoid(gate)) + bias


class ConcatSquashMLP(nn.Module):
  """FFJORD's ODEnet with `layer_type="concatsquash"`: hidden widths `hidden_dims`.

  Attributes:
    hidden_dims: widths of the hidden layers, e.g. (64, 64, 64) (FFJORD's toy model).
    activation: "tanh" | "softplus" (FFJORD's) | "silu".
    num_classes: must be 0 (the CNF family is unconditional).
  """

  hidden_dims: Sequence[int] = (64, 64, 64)
  activation: str = "tanh"
  num_classes: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, noise_labels: jax.Array,
               class_labels: jax.Array | None = None, train: bool = False) -> jax.Array:
    """x (B, ...), noise_labels = t (B,) → f (B, ...)."""
    del train  # no dropout
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"Unknown activation {self.activation!r} for ConcatSquashMLP; valid: "
                       f"{sorted(ACTIVATIONS)}")
    if self.num_classes or class_labels is not None:
      raise ValueError("ConcatSquashMLP is unconditional (num_classes = 0, no class_labels)")
    if noise_labels.shape != x.shape[:1]:
      raise ValueError(f"ConcatSquashMLP: noise_labels must have shape {x.shape[:1]} (the "
                       f"time of each sample), got {noise_labels.shape}")
    if not self.hidden_dims:
      raise ValueError("ConcatSquashMLP needs at least one hidden layer (hidden_dims is empty)")
    act = ACTIVATIONS[self.activation]
    h = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden_dims):
      h = act(ConcatSquashDense(width, name=f"layer{i}")(h, noise_labels))
    out = ConcatSquashDense(math.prod(x.shape[1:]), zero_init=True, name="output")(
        h, noise_labels)
    return out.reshape(x.shape)

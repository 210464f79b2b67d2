"""A noise-conditioned residual MLP for 2-D (or any flat) data.

F(x; c_noise, label): x (B, d) → (B, d). The noise label is embedded (positional or
Fourier features, then a 2-layer SiLU MLP, as in EDM's mapping network); each hidden
layer is a pre-activation residual block h ← h + W₂·SiLU(W₁·SiLU(h) + A·emb). The
output layer is zero-initialized, so F = 0 and D = c_skip·x at initialization.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from genode.models.embeddings import MappingNetwork


class MLP(nn.Module):
  """Residual MLP: hidden widths `hidden_dims`, a noise embedding of `embedding_dim`.

  Attributes:
    hidden_dims: width of each residual block, e.g. (256, 256, 256).
    embedding_dim: size of the noise (and label) embedding.
    embedding_type: "positional" | "fourier".
    num_classes: number of classes; 0 = unconditional. A learned null class (index
      `num_classes`) stands for "no label".
    label_dropout: probability of replacing a label by the null class in training.
    dropout: dropout rate inside the residual blocks (rng stream "dropout").
  """

  hidden_dims: Sequence[int] = (256, 256, 256)
  embedding_dim: int = 128
  embedding_type: str = "positional"
  num_classes: int = 0
  label_dropout: float = 0.0
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, noise_labels: jax.Array,
               class_labels: jax.Array | None = None, train: bool = False) -> jax.Array:
    """x (B, d), noise_labels (B,), class_labels int (B,) or None → F (B, d)."""
    if x.ndim != 2:
      raise ValueError(f"MLP expects x of shape (B, d), got {x.shape}")
    if not self.hidden_dims:
      raise ValueError("MLP needs at least one hidden layer (hidden_dims is empty)")
    emb = MappingNetwork(self.embedding_dim, self.embedding_dim, self.embedding_type,
                         self.num_classes, self.label_dropout, name="mapping")(
                             noise_labels, class_labels, x.shape[0], train)
    h = nn.Dense(self.hidden_dims[0], name="input")(x)
    for i, width in enumerate(self.hidden_dims):
      if h.shape[-1] != width:
        h = nn.Dense(width, name=f"project{i}")(h)
      r = nn.Dense(width, name=f"block{i}_dense0")(nn.silu(h))
      r = r + nn.Dense(width, name=f"block{i}_emb")(emb)
      r = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(r))
      h = h + nn.Dense(width, name=f"block{i}_dense1")(r)
    out = nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros, name="output")
    return out(nn.silu(h))


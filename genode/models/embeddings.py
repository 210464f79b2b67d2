"""Noise-level embeddings: the network's view of c_noise (EDM's SongUNet mapping).

Both take noise labels of shape (B,) and return (B, dim) features:

* `positional_embedding`: the Transformer sinusoids of DDPM/DDPM++ (Vaswani et al.
  2017; EDM `PositionalEmbedding` with `endpoint=True`): frequencies
  (1/max_positions)^(k/(dim/2 − 1)), k = 0 … dim/2 − 1, features [sin, cos].
* `fourier_embedding`: random Fourier features of NCSN++ (Tancik et al. 2020; EDM
  `FourierEmbedding`): frequencies f_k ~ N(0, scale²), features
  [cos 2πf·c, sin 2πf·c]. The frequencies are fixed, not trained: they are drawn from
  numpy's legacy `RandomState(seed)`, whose stream numpy keeps frozen across
  versions, so they are the same in every process and never need to be checkpointed.

`MappingNetwork` turns them (plus an optional class label, with a null class for
classifier-free guidance) into the embedding that every residual block receives.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _check(noise_labels: jax.Array, dim: int) -> None:
  if noise_labels.ndim != 1:
    raise ValueError(f"noise_labels must have shape (B,), got {noise_labels.shape}")
  if dim < 4 or dim % 2:
    raise ValueError(f"embedding dim must be an even number ≥ 4, got {dim}")


def positional_embedding(noise_labels: jax.Array, dim: int,
                         max_positions: float = 10_000.0) -> jax.Array:
  """Sinusoidal features (B,) → (B, dim): [sin(c·ω_k), cos(c·ω_k)].

  ω_k = max_positions^(−k/(dim/2 − 1)), k = 0 … dim/2 − 1.
  """
  _check(noise_labels, dim)
  half = dim // 2
  freqs = (1.0 / max_positions) ** (jnp.arange(half, dtype=jnp.float32) / (half - 1))
  angles = noise_labels.astype(jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def fourier_frequencies(dim: int, scale: float = 16.0, seed: int = 0) -> np.ndarray:
  """The dim/2 fixed frequencies f_k ~ N(0, scale²) of `fourier_embedding`, float32."""
  return (np.random.RandomState(seed).randn(dim // 2) * scale).astype(np.float32)


def fourier_embedding(noise_labels: jax.Array, dim: int, scale: float = 16.0,
                      seed: int = 0) -> jax.Array:
  """Random Fourier features (B,) → (B, dim): [cos(2πf_k·c), sin(2πf_k·c)]."""
  _check(noise_labels, dim)
  freqs = jnp.asarray(fourier_frequencies(dim, scale, seed))
  angles = 2 * jnp.pi * noise_labels.astype(jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


EMBEDDINGS = {"positional": positional_embedding, "fourier": fourier_embedding}


def get_embedding(name: str):
  """The embedding function called `name` ("positional" | "fourier")."""
  try:
    return EMBEDDINGS[name]
  except KeyError:
    raise ValueError(
        f"Unknown embedding_type {name!r}; valid types: {sorted(EMBEDDINGS)}") from None


def labels_or_null(class_labels: jax.Array | None, batch_size: int, num_classes: int,
                   label_dropout: float, train: bool, dropout_key=None) -> jax.Array:
  """Class labels (B,) int32 with the null class `num_classes` for "no label".

  `class_labels=None` means unconditional: every row gets the null class. In training
  with `label_dropout` > 0, each label is replaced by the null class with that
  probability (classifier-free guidance, Ho & Salimans 2022), using `dropout_key`.
  """
  if class_labels is None:
    return jnp.full((batch_size,), num_classes, dtype=jnp.int32)
  class_labels = jnp.asarray(class_labels)
  if class_labels.shape != (batch_size,) or not jnp.issubdtype(class_labels.dtype, jnp.integer):
    raise ValueError(f"class_labels must be integers of shape ({batch_size},), got "
                     f"{class_labels.dtype}{class_labels.shape}")
  class_labels = class_labels.astype(jnp.int32)
  if train and label_dropout > 0:
    drop = jax.random.uniform(dropout_key, (batch_size,)) < label_dropout
    class_labels = jnp.where(drop, num_classes, class_labels)
  return class_labels


class MappingNetwork(nn.Module):
  """EDM's mapping network: embed(c_noise) [+ label embedding] → 2 SiLU layers.

  noise_labels (B,), class_labels int (B,) or None → (B, emb_dim). A model with
  `num_classes` > 0 learns `num_classes + 1` label vectors; the last is the null class
  (used for `class_labels=None` and for label dropout). An unconditional model given
  labels raises ValueError.
  """

  noise_dim: int
  emb_dim: int
  embedding_type: str = "positional"
  num_classes: int = 0
  label_dropout: float = 0.0

  @nn.compact
  def __call__(self, noise_labels, class_labels, batch_size: int, train: bool) -> jax.Array:
    noise_labels = jnp.broadcast_to(jnp.asarray(noise_labels, jnp.float32), (batch_size,))
    emb = get_embedding(self.embedding_type)(noise_labels, self.noise_dim)
    if self.num_classes:
      key = self.make_rng("dropout") if train and self.label_dropout > 0 else None
      labels = labels_or_null(class_labels, batch_size, self.num_classes,
                              self.label_dropout, train, key)
      emb = emb + nn.Embed(self.num_classes + 1, self.noise_dim, name="label")(labels)
    elif class_labels is not None:
      raise ValueError("The model is unconditional (num_classes=0) but class_labels were "
                       "given; set num_classes or pass class_labels=None")
    emb = nn.silu(nn.Dense(self.emb_dim, name="layer0")(emb))
    return nn.silu(nn.Dense(self.emb_dim, name="layer1")(emb))

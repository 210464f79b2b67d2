"""A pseudo-random permutation of [0, N) evaluated pointwise: O(1) per index, no O(N) array.

`genode.data.pipeline.example_indices` reads row j of step k as `perm(seed, e)[i mod N]`
(i = k·b + j, epoch e = ⌊i/N⌋). For a finite image dataset `perm` is a NumPy
permutation, O(N) time and memory once per epoch. For millions of stored couplings
(4M CIFAR pairs) `FeistelPermutation` is the drop-in replacement: π(i) is a 4-round
balanced Feistel network on ⌈log₂ N⌉ (rounded up to even) bits with splitmix64 round
functions keyed by (seed, epoch), restricted to [0, N) by cycle walking (Black & Rogaway
2002): a bijection of [0, N), computed for just the rows a batch needs.
"""

from __future__ import annotations

import numpy as np

from genode.data import pipeline


def _splitmix64(z: np.ndarray) -> np.ndarray:
  """The splitmix64 finalizer, a bijective 64-bit mixer (wrapping uint64 arithmetic)."""
  z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return z ^ (z >> np.uint64(31))


class FeistelPermutation:
  """π: [0, n) → [0, n), a function of (seed, epoch) only; `perm[indices]` → int64 array.

  Call signature matches `pipeline.epoch_permutation(seed, epoch, num_examples)`, so it
  can be passed as `example_indices(..., permutation=FeistelPermutation)`.
  """

  def __init__(self, seed: int, epoch: int, num_examples: int, rounds: int = 4):
    if num_examples < 1:
      raise ValueError(f"num_examples must be ≥ 1, got {num_examples}")
    self.num_examples = int(num_examples)
    bits = max(2, int(num_examples - 1).bit_length())
    self._half = np.uint64((bits + 1) // 2)
    self._mask = np.uint64((1 << int(self._half)) - 1)
    self._keys = pipeline.rng(seed, pipeline.TAG_EPOCH, epoch).integers(
        0, 2**63, size=rounds, dtype=np.int64).astype(np.uint64)

  def __len__(self) -> int:
    return self.num_examples

  def _encrypt(self, v: np.ndarray) -> np.ndarray:
    left, right = v >> self._half, v & self._mask
    for key in self._keys:
      left, right = right, left ^ (_splitmix64(right ^ key) & self._mask)
    return (left << self._half) | right

  def __getitem__(self, indices) -> np.ndarray:
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= self.num_examples):
      raise IndexError(f"indices outside [0, {self.num_examples})")
    out = self._encrypt(indices.astype(np.uint64))
    outside = out >= np.uint64(self.num_examples)
    while np.any(outside):  # cycle walking: < 4 rounds on average (domain < 4n)
      out[outside] = self._encrypt(out[outside])
      outside = out >= np.uint64(self.num_examples)
    return out.astype(np.int64)

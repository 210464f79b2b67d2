"""Binary coupling masks (RealNVP §3.4, NICE §5.1): 1 = passed through, 0 = transformed.

A mask has the shape of one sample, x.shape[1:]. Checkerboard masks need an image
(H, W, C); channel masks split the last axis in two halves; alternating masks take the
odd/even entries of a vector (NICE's "odd against even" split, Dinh et al. 2014 §5.1).
"""

from __future__ import annotations

import numpy as np

MASK_KINDS = ("checkerboard", "channel", "alternate")


def checkerboard_mask(sample_shape: tuple[int, ...], parity: int) -> np.ndarray:
  """(H, W, C) float mask, 1 where (i + j + parity) is even (RealNVP Fig. 3, left)."""
  if len(sample_shape) != 3:
    raise ValueError(
        f"checkerboard mask needs an image input (B, H, W, C); got a sample of shape "
        f"{tuple(sample_shape)} (use mask='alternate' for vectors)")
  height, width, channels = sample_shape
  i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  board = ((i + j + parity) % 2 == 0).astype(np.float32)
  return np.broadcast_to(board[:, :, None], (height, width, channels)).copy()


def channel_mask(sample_shape: tuple[int, ...], parity: int) -> np.ndarray:
  """Mask over the last axis: the first half passes through (parity 0) or the second."""
  channels = sample_shape[-1]
  if channels < 2:
    raise ValueError(f"channel mask needs at least 2 channels; got a sample of shape "
                     f"{tuple(sample_shape)}")
  first = (np.arange(channels) < channels // 2).astype(np.float32)
  mask = first if parity % 2 == 0 else 1.0 - first
  return np.broadcast_to(mask, tuple(sample_shape)).copy()


def alternate_mask(sample_shape: tuple[int, ...], parity: int) -> np.ndarray:
  """(d,) mask, 1 on the even entries (parity 0) or on the odd ones (parity 1)."""
  if len(sample_shape) != 1:
    raise ValueError(f"alternate mask needs a vector input (B, d); got a sample of shape "
                     f"{tuple(sample_shape)}")
  if sample_shape[0] < 2:
    raise ValueError(f"alternate mask needs d ≥ 2; got a sample of shape {tuple(sample_shape)}")
  return ((np.arange(sample_shape[0]) + parity) % 2 == 0).astype(np.float32)


def make_mask(kind: str, sample_shape: tuple[int, ...], parity: int) -> np.ndarray:
  """The mask `kind` ∈ MASK_KINDS for one sample of shape `sample_shape`."""
  builders = {"checkerboard": checkerboard_mask, "channel": channel_mask,
              "alternate": alternate_mask}
  if kind not in builders:
    raise ValueError(f"Unknown mask {kind!r}; valid masks: {list(MASK_KINDS)}")
  return builders[kind](tuple(sample_shape), parity)

"""2-D toy distributions (as in FFJORD, Grathwohl et al. 2019, `lib/toy_data.py`).

Generated, not stored: the batch at step k is drawn from a numpy Generator seeded with
(seed, k), so it is a pure function of (seed, k). Distributions (after FFJORD's scaling):

* "moons": two interleaved half circles, N(0, 0.1²) noise, then ×2 − (1, 0.2);
* "8gaussians": 8 equal N(μ_i, (0.5/√2)²) components, μ_i = 4/√2·(cos θ_i, sin θ_i),
  θ_i = iπ/4 (FFJORD's centres divided by 1.414 are these up to 1e-4);
* "checkerboard": uniform on the 8 black 2×2 squares of a 4×4 board on [-4, 4]²
  (density 1/32 on them);
* "swissroll": scikit-learn's swiss roll (t = 1.5π(1 + 2u), (t cos t, t sin t) + N(0, 1)
  noise) divided by 5;
* "pinwheel": 5 spiral arms (radial std 0.3, tangential std 0.1, rate 0.25), ×2.

`log_prob` is exact for 8gaussians and checkerboard; the others have no closed form.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from genode.data import pipeline
from genode.data.base import Dataset, check_split

_EIGHT_CENTRES = (4 / math.sqrt(2)) * np.stack(
    [np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], axis=-1)
_EIGHT_STD = 0.5 / math.sqrt(2)


def _moons(rng: np.random.Generator, n: int) -> np.ndarray:
  upper = rng.random(n) < 0.5
  t = np.pi * rng.random(n)
  x = np.where(upper, np.cos(t), 1 - np.cos(t))
  y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
  points = np.stack([x, y], -1) + 0.1 * rng.standard_normal((n, 2))
  return points * 2 + np.array([-1.0, -0.2])


def _eight_gaussians(rng, n):
  return _EIGHT_CENTRES[rng.integers(0, 8, n)] + _EIGHT_STD * rng.standard_normal((n, 2))


def _checkerboard(rng, n):
  x1 = rng.random(n) * 4 - 2
  x2 = rng.random(n) - 2 * rng.integers(0, 2, n) + np.floor(x1) % 2
  return 2 * np.stack([x1, x2], -1)


def _swissroll(rng, n):
  t = 1.5 * np.pi * (1 + 2 * rng.random(n))
  points = np.stack([t * np.cos(t), t * np.sin(t)], -1) + rng.standard_normal((n, 2))
  return points / 5


def _pinwheel(rng, n, num_arms=5, radial_std=0.3, tangential_std=0.1, rate=0.25):
  arms = rng.integers(0, num_arms, n)
  features = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
  features[:, 0] += 1.0
  angles = 2 * np.pi * arms / num_arms + rate * np.exp(features[:, 0])
  c, s = np.cos(angles), np.sin(angles)
  rotations = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (n, 2, 2)
  return 2 * np.einsum("ti,tij->tj", features, rotations)


def _log_prob_eight_gaussians(x):
  d2 = np.sum((x[:, None, :] - _EIGHT_CENTRES[None]) ** 2, -1)  # (n, 8)
  log_components = -d2 / (2 * _EIGHT_STD**2) - math.log(2 * math.pi * _EIGHT_STD**2)
  top = np.max(log_components, -1, keepdims=True)
  return (top + np.log(np.mean(np.exp(log_components - top), -1, keepdims=True)))[:, 0]


def _log_prob_checkerboard(x):
  cells = np.floor(x / 2)  # board coordinates of the 2×2 squares
  inside = np.all((x >= -4) & (x < 4), -1) & ((cells[:, 0] + cells[:, 1]) % 2 == 0)
  return np.where(inside, -math.log(32.0), -np.inf)


SAMPLERS = {"moons": _moons, "8gaussians": _eight_gaussians, "checkerboard": _checkerboard,
            "swissroll": _swissroll, "pinwheel": _pinwheel}
LOG_PROBS = {"8gaussians": _log_prob_eight_gaussians, "checkerboard": _log_prob_checkerboard}


def _generator(key_or_seed) -> np.random.Generator:
  """A numpy Generator from an int seed or a JAX PRNG key (its raw key data)."""
  if isinstance(key_or_seed, (int, np.integer)):
    return pipeline.rng(int(key_or_seed), pipeline.TAG_SAMPLE, 0)
  import jax
  data = key_or_seed
  if jax.dtypes.issubdtype(getattr(data, "dtype", None), jax.dtypes.prng_key):
    data = jax.random.key_data(data)
  words = np.asarray(data, dtype=np.uint32).ravel()
  return np.random.default_rng(np.random.SeedSequence([int(w) for w in words]))


@dataclasses.dataclass(frozen=True)
class Toy2D(Dataset):
  """A generated 2-D distribution; `split` returns `split_size` fixed samples."""

  distribution: str = "8gaussians"
  split_size: int = 10_000
  split_seed: int = 0
  name = "toy2d"

  def __post_init__(self):
    if self.distribution not in SAMPLERS:
      raise ValueError(f"Unknown toy2d distribution {self.distribution!r}; valid "
                       f"distributions: {sorted(SAMPLERS)}")

  @property
  def shape(self):
    return (2,)

  def sample(self, key_or_seed, n: int) -> np.ndarray:
    """n samples, float32 (n, 2), from an int seed or a JAX PRNG key."""
    return SAMPLERS[self.distribution](_generator(key_or_seed), n).astype(np.float32)

  def log_prob(self, x) -> np.ndarray:
    """Exact log-density (n,) at x (n, 2), float64; NotImplementedError where unknown."""
    if self.distribution not in LOG_PROBS:
      raise NotImplementedError(
          f"toy2d {self.distribution!r} has no closed-form density; log_prob is exact for "
          f"{sorted(LOG_PROBS)} only")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
      raise ValueError(f"log_prob expects points of shape (n, 2), got {x.shape}")
    return LOG_PROBS[self.distribution](x)

  def train_batch(self, seed, step, batch_size, process_index=0, process_count=1):
    start, stop = pipeline.process_rows(batch_size, process_index, process_count)
    points = SAMPLERS[self.distribution](pipeline.rng(seed, pipeline.TAG_BATCH, step), batch_size)
    return {"x": points[start:stop].astype(np.float32)}

  def split(self, which):
    index = ("train", "test", "val").index(check_split(which))
    points = SAMPLERS[self.distribution](
        pipeline.rng(self.split_seed, pipeline.TAG_SPLIT, index), self.split_size)
    return {"x": points.astype(np.float32)}

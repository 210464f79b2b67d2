"""Disjoint sets of samples from one seed, so that a metric's seed noise can be measured.

Set r of `repeats` is drawn from the sampler batches r·B … (r + 1)·B − 1 of the seed
(B = ⌈num / batch⌉), so set 0 is what a single draw of `num` samples gives.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import numpy as np


def sample_sets(sample_batch: Callable, num: int, batch: int, repeats: int, seed: int):
  """`repeats` sets of `num` samples, concatenated (repeats·num, *shape), and the outputs of
  every call: set r is `sample_batch(fold_in(key(seed), i))[:num]` over the batches
  i = r·B … (r + 1)·B − 1, B = ⌈num / batch⌉, so set 0 does not depend on `repeats`."""
  root = jax.random.key(int(seed))
  per_set = math.ceil(num / batch)
  sets, infos = [], []
  for r in range(repeats):
    out = []
    for i in range(r * per_set, (r + 1) * per_set):
      x, info = sample_batch(jax.random.fold_in(root, i))
      out.append(np.asarray(x))
      infos.append(info)
    sets.append(np.concatenate(out)[:num])
  return np.concatenate(sets), infos

"""scikit-learn's bundled 8×8 handwritten digits (UCI optdigits test set): no download.

1797 grey images with values v ∈ {0, …, 16} and labels 0–9. They are stored as 8-bit
images u = round(v·255/16) (so 16 → 255, 8 → 128) and then follow the 8-bit
convention of every image dataset: x = u/127.5 − 1 ∈ [-1, 1], `quantization_levels`
= 256 (a likelihood dequantizes them like any 8-bit data; only 17 of the 256 levels
occur). Split: a fixed random permutation (numpy `default_rng(0)`) puts 1500 images in
"train" and 297 in "test". (The file's order is by writer, so its last 297 images are
not distributed like the first 1500: with that split the train/test Fréchet "floor" was
larger than a trained model's distance to the train split.)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from genode.data.base import ImageDataset

NUM_TRAIN = 1500  # the other 1797 − 1500 = 297 images are the test split
SPLIT_SEED = 0


@dataclasses.dataclass(frozen=True)
class Digits(ImageDataset):
  """8×8×1 digits, 10 classes, 1500 train / 297 test."""

  name = "digits"

  @property
  def shape(self):
    return (8, 8, 1)

  @property
  def classes(self):
    return 10

  def load(self, which):
    from sklearn.datasets import load_digits  # bundled with scikit-learn
    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    part = order[:NUM_TRAIN] if which == "train" else order[NUM_TRAIN:]
    return images[part], labels[part]

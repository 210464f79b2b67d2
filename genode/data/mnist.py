"""MNIST from its four standard IDX files at a local path (nothing is downloaded).

Files (plain or gzipped, in `path`): train-images-idx3-ubyte, train-labels-idx1-ubyte,
t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each optionally with ".gz". IDX format
(LeCun et al.): 2 zero bytes, a type byte (0x08 = uint8), the number of dimensions, the
dimensions as big-endian uint32, then the data. Images are 28×28×1, 8-bit: x = u/127.5 − 1.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import pathlib
import zlib

import numpy as np

from genode.data.base import ImageDataset

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SOURCE = "http://yann.lecun.com/exdb/mnist/ (or a mirror)"


def read_idx(path: pathlib.Path) -> np.ndarray:
  """An IDX file of unsigned bytes (gzipped if the name ends in .gz) as a uint8 array."""
  try:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
  except (OSError, EOFError, zlib.error) as e:
    raise ValueError(f"Cannot read IDX file {path}: {e}") from e
  if len(data) < 4 or data[0] != 0 or data[1] != 0:
    raise ValueError(f"{path} is not an IDX file (it does not start with two zero bytes)")
  if data[2] != 0x08:
    raise ValueError(f"{path}: IDX type byte is {data[2]:#04x}, expected 0x08 (unsigned byte)")
  ndim = data[3]
  header = 4 + 4 * ndim
  if len(data) < header:
    raise ValueError(f"{path}: truncated IDX header")
  dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
  if len(data) - header != math.prod(dims):
    raise ValueError(f"{path}: the header says shape {dims} ({math.prod(dims)} bytes) but "
                     f"{len(data) - header} bytes follow")
  return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


@dataclasses.dataclass(frozen=True)
class MNIST(ImageDataset):
  """28×28×1 MNIST, 10 classes, 60000 train / 10000 test; `path` holds the IDX files."""

  path: str = ""
  name = "mnist"

  def __post_init__(self):
    if not self.path:
      raise ValueError(f"mnist needs path=<folder with the four IDX files from {SOURCE}>")

  def check_files(self) -> None:
    """FileNotFoundError naming the missing file and where it goes (before training)."""
    for which in FILES:
      for stem in FILES[which]:
        self._file(stem)

  @property
  def shape(self):
    return (28, 28, 1)

  @property
  def classes(self):
    return 10

  def _file(self, stem: str) -> pathlib.Path:
    folder = pathlib.Path(self.path).expanduser()
    for name in (stem, stem + ".gz"):
      if (folder / name).is_file():
        return folder / name
    raise FileNotFoundError(
        f"MNIST file {stem}[.gz] not found in {str(folder)!r}. Put the four MNIST IDX files "
        f"({', '.join(s + '.gz' for pair in FILES.values() for s in pair)}; gzipped or not) "
        f"from {SOURCE} into that folder, or pass path=<folder holding them>.")

  def load(self, which):
    image_stem, label_stem = FILES[which]
    images, labels = read_idx(self._file(image_stem)), read_idx(self._file(label_stem))
    if images.ndim != 3 or labels.ndim != 1:
      raise ValueError(f"MNIST {which}: expected images (N, 28, 28) and labels (N,), got "
                       f"{images.shape} in {self._file(image_stem)} and {labels.shape} in "
                       f"{self._file(label_stem)}")
    return images[..., None], labels

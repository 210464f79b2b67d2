"""CIFAR-10 from its standard python archive at a local path (nothing is downloaded).

`path` is `cifar-10-python.tar.gz`, the extracted `cifar-10-batches-py/` folder, or a
folder holding either. The batches `data_batch_1` … `data_batch_5` (train, 50000) and
`test_batch` (10000) are python pickles of {b"data": uint8 (10000, 3072) in CHW order,
b"labels": [int]}; they are read (from the archive directly, nothing is extracted) with
an unpickler that only admits numpy arrays, never arbitrary code. Images are 32×32×3,
8-bit: x = u/127.5 − 1.
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
import pickle
import tarfile

import numpy as np

from genode.data.base import ImageDataset

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
SOURCE = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 spell bytes
}


class _ArrayUnpickler(pickle.Unpickler):
  """Unpickles builtin containers and numpy arrays only."""

  def find_class(self, module, name):
    if (module, name) in _ALLOWED_GLOBALS:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch")


def _parse_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
  """One pickled batch → (images uint8 (N, 32, 32, 3), labels (N,))."""
  try:
    batch = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    images = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    images = images.reshape(len(images), 3, 32, 32).transpose(0, 2, 3, 1)
  except Exception as e:  # a wrong file can fail in many ways; name it
    raise ValueError(f"{where} is not a CIFAR-10 python batch (a pickle of {{b'data': "
                     f"uint8 (N, 3072), b'labels': [N ints]}}): {type(e).__name__}: {e}") from e
  return images, labels


@dataclasses.dataclass(frozen=True)
class CIFAR10(ImageDataset):
  """32×32×3 CIFAR-10, 10 classes, 50000 train / 10000 test, from `path` (see module)."""

  path: str = ""
  name = "cifar10"

  def __post_init__(self):
    if not self.path:
      raise ValueError(f"cifar10 needs path=<{ARCHIVE} or the {FOLDER}/ folder> ({SOURCE})")

  def check_files(self) -> None:
    """FileNotFoundError saying where the files go (before training, not at a batch)."""
    self._source()

  @property
  def shape(self):
    return (32, 32, 3)

  @property
  def classes(self):
    return 10

  def _source(self) -> pathlib.Path:
    """The archive or the batches folder that `path` designates."""
    path = pathlib.Path(self.path).expanduser()
    for candidate in (path, path / FOLDER, path / ARCHIVE):
      if candidate.is_file() and candidate.name.endswith((".tar.gz", ".tgz", ".tar")):
        return candidate
      if candidate.is_dir() and (candidate / "test_batch").is_file():
        return candidate
    raise FileNotFoundError(
        f"CIFAR-10 not found at {str(path)!r}: looked for {path} as the archive, for "
        f"{path / FOLDER}/ (with data_batch_1..5, test_batch) and for {path / ARCHIVE}. "
        f"Download {SOURCE} and pass path=<the .tar.gz, the extracted {FOLDER}/ folder, "
        f"or a folder holding either>.")

  def _read_batches(self, names) -> list[tuple[bytes, str]]:
    source = self._source()
    if source.is_dir():
      missing = [n for n in names if not (source / n).is_file()]
      if missing:
        raise FileNotFoundError(f"CIFAR-10 batches {missing} missing from {source}/; it "
                                f"should hold data_batch_1..5 and test_batch ({SOURCE})")
      return [((source / n).read_bytes(), str(source / n)) for n in names]
    try:
      with tarfile.open(source) as tar:
        members = {pathlib.PurePosixPath(m.name).name: m for m in tar.getmembers() if m.isfile()}
        missing = [n for n in names if n not in members]
        if missing:
          raise FileNotFoundError(f"CIFAR-10 batches {missing} missing from the archive "
                                  f"{source} (expected {FOLDER}/data_batch_1..5, test_batch)")
        return [(tar.extractfile(members[n]).read(), f"{source}:{members[n].name}")
                for n in names]
    except (tarfile.TarError, EOFError, OSError) as e:
      if isinstance(e, FileNotFoundError):
        raise
      raise ValueError(f"Cannot read the CIFAR-10 archive {source}: {e}") from e

  def load(self, which):
    parts = [_parse_batch(data, where) for data, where in self._read_batches(BATCHES[which])]
    return (np.concatenate([images for images, _ in parts]),
            np.concatenate([labels for _, labels in parts]))

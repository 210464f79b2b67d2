"""Datasets: pure (seed, step) batches, process sharding, file formats, errors, densities."""

import gzip
import io
import itertools
import pickle
import tarfile

import jax
import numpy as np
import pytest

from genode.data import CIFAR10, MNIST, batches, get_dataset, read_idx, to_uint8, uint8_to_float
from genode.data import pipeline

# -- helpers that write the real file formats ---------------------------------


def _idx_bytes(array: np.ndarray) -> bytes:
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
  return header + array.astype(np.uint8).tobytes()


def _write_mnist(folder, gz: bool, n_train=7, n_test=3, seed=0):
  rng = np.random.default_rng(seed)
  arrays = {}
  for prefix, n in (("train", n_train), ("t10k", n_test)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    for stem, array in ((f"{prefix}-images-idx3-ubyte", images),
                        (f"{prefix}-labels-idx1-ubyte", labels)):
      data = _idx_bytes(array)
      if gz:
        (folder / (stem + ".gz")).write_bytes(gzip.compress(data))
      else:
        (folder / stem).write_bytes(data)
    arrays[prefix] = (images, labels)
  return arrays


def _cifar_batches(sizes=(2, 3, 2, 2, 3, 4), seed=0):
  """{name: (pickle bytes, images CHW (n, 3, 32, 32), labels)} for 5 train + 1 test batch."""
  rng = np.random.default_rng(seed)
  names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
  out = {}
  for name, n in zip(names, sizes):
    chw = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    data = pickle.dumps({b"batch_label": name.encode(), b"labels": labels,
                         b"data": chw.reshape(n, 3072), b"filenames": [b"x.png"] * n},
                        protocol=2)
    out[name] = (data, chw, labels)
  return out


def _write_cifar_folder(folder, batches_):
  folder.mkdir(parents=True)
  for name, (data, _, _) in batches_.items():
    (folder / name).write_bytes(data)


def _write_cifar_tar(path, batches_):
  with tarfile.open(path, "w:gz") as tar:
    for name, (data, _, _) in batches_.items():
      info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def digits():
  return get_dataset("digits")


# -- the pipeline --------------------------------------------------------------


@pytest.mark.parametrize("name, params", [("digits", {}), ("toy2d", {"distribution": "moons"})])
def test_batches_are_pure_functions_of_seed_and_step(name, params):
  a, b = get_dataset(name, **params), get_dataset(name, **params)  # fresh instances
  first = a.train_batch(seed=3, step=5, batch_size=16)
  again = b.train_batch(seed=3, step=5, batch_size=16)
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  assert first["x"].dtype == np.float32 and first["x"].shape == (16, *a.shape)
  assert not np.array_equal(first["x"], a.train_batch(3, 6, 16)["x"])
  assert not np.array_equal(first["x"], a.train_batch(4, 5, 16)["x"])


@pytest.mark.parametrize("name, params", [("digits", {}), ("toy2d", {"distribution": "pinwheel"})])
@pytest.mark.parametrize("process_count", [2, 4])
def test_process_shards_concatenate_to_the_global_batch(name, params, process_count):
  ds = get_dataset(name, **params)
  step = 62  # digits: rows 62·24 = 1488 … 1511 straddle the first epoch's end at 1500
  whole = ds.train_batch(7, step, 24)
  shards = [ds.train_batch(7, step, 24, p, process_count) for p in range(process_count)]
  for key in whole:
    assert all(s[key].shape[0] == 24 // process_count for s in shards)
    np.testing.assert_array_equal(np.concatenate([s[key] for s in shards]), whole[key])


def test_epochs_are_permutations_and_batches_straddle_them():
  n, b = 12, 5
  rows = [pipeline.example_indices(1, k, b, n, 0, b) for k in range(12)]  # 60 rows, 5 epochs
  flat = np.concatenate(rows)
  for e in range(5):
    epoch = flat[e * n:(e + 1) * n]
    np.testing.assert_array_equal(np.sort(epoch), np.arange(n))
    np.testing.assert_array_equal(epoch, pipeline.epoch_permutation(1, e, n))
  assert not np.array_equal(flat[:n], flat[n:2 * n])  # a fresh order each epoch
  # The row range of one process is the same slice of the global batch.
  np.testing.assert_array_equal(pipeline.example_indices(1, 2, b, n, 1, 3), rows[2][1:3])


def test_pipeline_errors():
  ds = get_dataset("toy2d")
  with pytest.raises(ValueError, match="not a positive multiple of process_count 3"):
    ds.train_batch(0, 0, 16, 0, 3)
  with pytest.raises(ValueError, match=r"process_index must be in \[0, 2\)"):
    ds.train_batch(0, 0, 16, 2, 2)
  with pytest.raises(ValueError, match="≥ 0"):
    ds.train_batch(-1, 0, 16)


def test_batches_iterator_matches_direct_calls_and_raises():
  ds = get_dataset("toy2d", distribution="checkerboard")
  fn = lambda k: ds.train_batch(2, k, 8)
  for prefetch in (0, 2):
    got = list(itertools.islice(batches(fn, start_step=4, prefetch=prefetch), 3))
    for k, batch in zip(range(4, 7), got):
      np.testing.assert_array_equal(batch["x"], fn(k)["x"])

  def failing(k):
    if k == 2:
      raise RuntimeError("bad step")
    return {"k": k}

  it = batches(failing, prefetch=2)
  assert [next(it)["k"], next(it)["k"]] == [0, 1]
  with pytest.raises(RuntimeError, match="bad step"):
    next(it)


def test_uint8_round_trip():
  u = np.arange(256, dtype=np.uint8)
  x = uint8_to_float(u)
  assert x.dtype == np.float32 and x[0] == -1.0 and x[-1] == 1.0
  np.testing.assert_array_equal(to_uint8(x), u)
  np.testing.assert_array_equal(to_uint8(np.array([-3.0, 3.0])), [0, 255])


# -- digits --------------------------------------------------------------------


def test_digits_shapes_range_and_split(digits):
  from sklearn.datasets import load_digits
  assert digits.shape == (8, 8, 1) and digits.num_classes == 10
  assert digits.quantization_levels == 256
  train, test = digits.split("train"), digits.split("test")
  assert train["x"].shape == (1500, 8, 8, 1) and test["x"].shape == (297, 8, 8, 1)
  assert train["label"].dtype == np.int32 and set(np.unique(test["label"])) == set(range(10))
  # 8-bit convention: u = round(v·255/16), x = u/127.5 − 1.
  # The split is a fixed random permutation: disjoint, and together the whole file.
  raw = load_digits()
  order = np.random.default_rng(0).permutation(1797)
  np.testing.assert_array_equal(to_uint8(test["x"])[..., 0],
                                np.rint(raw.images[order[1500:]] * 255 / 16).astype(np.uint8))
  np.testing.assert_array_equal(test["label"], raw.target[order[1500:]])
  np.testing.assert_array_equal(train["label"], raw.target[order[:1500]])
  assert train["x"].min() == -1.0 and train["x"].max() == 1.0
  batch = digits.train_batch(0, 0, 32)
  assert batch["x"].shape == (32, 8, 8, 1) and batch["label"].shape == (32,)
  # Batches are rows of the train split, in the order of the (seed, epoch) permutation.
  for step in (0, 46, 47):  # step 46 straddles the first epoch's end (1472 … 1503)
    rows = pipeline.example_indices(0, step, 32, 1500, 0, 32)
    batch = digits.train_batch(0, step, 32)
    np.testing.assert_array_equal(batch["x"], train["x"][rows])
    np.testing.assert_array_equal(batch["label"], train["label"][rows])
  with pytest.raises(ValueError, match="valid splits"):
    digits.split("validation")


def test_unlabelled_view_has_no_labels():
  ds = get_dataset("digits", use_labels=False)
  assert ds.num_classes == 0 and set(ds.train_batch(0, 0, 4)) == {"x"}


# -- MNIST ---------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reads_idx_files(tmp_path, gz):
  arrays = _write_mnist(tmp_path, gz)
  ds = get_dataset("mnist", path=str(tmp_path))
  assert ds.shape == (28, 28, 1) and ds.num_classes == 10
  for which, prefix in (("train", "train"), ("test", "t10k")):
    images, labels = arrays[prefix]
    split = ds.split(which)
    np.testing.assert_array_equal(split["x"][..., 0], images / np.float32(127.5) - 1)
    np.testing.assert_array_equal(split["label"], labels)
  batch = ds.train_batch(0, 1, 14, 1, 2)  # 14 > 7: the batch spans two epochs
  assert batch["x"].shape == (7, 28, 28, 1)


def test_mnist_missing_files_say_where_to_put_them(tmp_path):
  with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*not found in") as e:
    get_dataset("mnist", path=str(tmp_path)).check_files()  # constructing reads nothing
  assert str(tmp_path) in str(e.value) and "Put the four MNIST IDX files" in str(e.value)
  _write_mnist(tmp_path, gz=True)
  (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
  with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
    MNIST(path=str(tmp_path)).check_files()
  with pytest.raises(ValueError, match="needs path="):
    get_dataset("mnist")


def test_mnist_malformed_files_are_named(tmp_path):
  _write_mnist(tmp_path, gz=False)
  bad = tmp_path / "train-images-idx3-ubyte"
  good = bad.read_bytes()
  cases = [(b"\x01" + good[1:], "two zero bytes"), (good[:2] + b"\x0d" + good[3:], "type byte"),
           (good[:-5], "bytes follow")]
  for data, message in cases:
    bad.write_bytes(data)
    with pytest.raises(ValueError, match=message) as e:
      MNIST(path=str(tmp_path)).split("train")
    assert str(bad) in str(e.value)
  bad.write_bytes(good)
  (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(5, np.uint8)))
  with pytest.raises(ValueError, match="7 images but labels of shape"):
    MNIST(path=str(tmp_path)).split("train")
  gz = tmp_path / "x.gz"
  gz.write_bytes(b"not gzip")
  with pytest.raises(ValueError, match="Cannot read IDX file .*x.gz"):
    read_idx(gz)


# -- CIFAR-10 ------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["tar", "folder", "parent_of_tar", "parent_of_folder"])
def test_cifar10_reads_archive_and_folder(tmp_path, layout):
  data = _cifar_batches()
  if layout in ("tar", "parent_of_tar"):
    _write_cifar_tar(tmp_path / "cifar-10-python.tar.gz", data)
    path = tmp_path / "cifar-10-python.tar.gz" if layout == "tar" else tmp_path
  else:
    _write_cifar_folder(tmp_path / "cifar-10-batches-py", data)
    path = tmp_path / "cifar-10-batches-py" if layout == "folder" else tmp_path
  ds = get_dataset("cifar10", path=str(path))
  assert ds.shape == (32, 32, 3) and ds.quantization_levels == 256
  train = ds.split("train")
  chw = np.concatenate([data[f"data_batch_{i}"][1] for i in range(1, 6)])
  np.testing.assert_array_equal(to_uint8(train["x"]), chw.transpose(0, 2, 3, 1))  # NHWC
  np.testing.assert_array_equal(
      train["label"], sum((data[f"data_batch_{i}"][2] for i in range(1, 6)), []))
  test = ds.split("test")
  assert test["x"].shape == (4, 32, 32, 3)
  # A pixel, spelled out: channel c of pixel (h, w) is byte c·1024 + h·32 + w of the row.
  row = pickle.loads(data["test_batch"][0])[b"data"][2]
  assert to_uint8(test["x"])[2, 5, 7, 1] == row[1 * 1024 + 5 * 32 + 7]
  assert ds.train_batch(0, 3, 8)["x"].shape == (8, 32, 32, 3)


def test_cifar10_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz") as e:
    CIFAR10(path=str(tmp_path)).check_files()
  assert str(tmp_path) in str(e.value)
  data = _cifar_batches()
  folder = tmp_path / "cifar-10-batches-py"
  _write_cifar_folder(folder, data)
  (folder / "data_batch_3").unlink()
  with pytest.raises(FileNotFoundError, match="data_batch_3"):
    CIFAR10(path=str(folder)).split("train")
  (folder / "data_batch_3").write_bytes(b"garbage")
  with pytest.raises(ValueError, match="data_batch_3 is not a CIFAR-10 python batch"):
    CIFAR10(path=str(folder)).split("train")

  class Evil:
    def __reduce__(self):
      return (print, ("pwned",))

  (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
  with pytest.raises(ValueError, match="refusing to load builtins.print"):
    CIFAR10(path=str(folder)).split("train")
  (tmp_path / "broken.tar.gz").write_bytes(b"not a tar")
  with pytest.raises(ValueError, match="Cannot read the CIFAR-10 archive .*broken.tar.gz"):
    CIFAR10(path=str(tmp_path / "broken.tar.gz")).split("test")
  with pytest.raises(ValueError, match="needs path="):
    get_dataset("cifar10")


# -- toy 2-D -------------------------------------------------------------------


@pytest.mark.parametrize("distribution", ["8gaussians", "checkerboard"])
def test_toy_densities_normalize(distribution):
  ds = get_dataset("toy2d", distribution=distribution)
  h = 0.02  # midpoint rule on [-8, 8]², cell-aligned with the checkerboard's squares
  grid = np.arange(-8 + h / 2, 8, h)
  xx, yy = np.meshgrid(grid, grid)
  density = np.exp(ds.log_prob(np.stack([xx.ravel(), yy.ravel()], -1)))
  np.testing.assert_allclose(density.sum() * h * h, 1.0, rtol=1e-6)
  # Samples lie where the density is: for the checkerboard, log p = −log 32 exactly.
  logp = ds.log_prob(ds.sample(0, 2000))
  assert np.all(np.isfinite(logp))
  if distribution == "checkerboard":
    np.testing.assert_allclose(logp, -np.log(32.0))


def test_eight_gaussians_log_prob_closed_form():
  ds = get_dataset("toy2d", distribution="8gaussians")
  centre = np.array([[4 / np.sqrt(2), 0.0]])
  s2 = 0.125  # (0.5/√2)²
  # At a centre, the other 7 components are ≥ 2.16 away: their share is < 1e-8.
  np.testing.assert_allclose(ds.log_prob(centre), np.log(1 / 8 / (2 * np.pi * s2)), rtol=1e-7)


def test_toy_sample_split_and_errors():
  ds = get_dataset("toy2d", distribution="swissroll", split_size=100)
  np.testing.assert_array_equal(ds.sample(jax.random.key(1), 5), ds.sample(jax.random.key(1), 5))
  np.testing.assert_array_equal(ds.sample(jax.random.PRNGKey(1), 5),
                                ds.sample(jax.random.key(1), 5))
  assert not np.array_equal(ds.sample(1, 5), ds.sample(2, 5))
  train, test = ds.split("train"), ds.split("test")
  assert train["x"].shape == (100, 2) and set(train) == {"x"}
  np.testing.assert_array_equal(train["x"], ds.split("train")["x"])
  assert not np.array_equal(train["x"], test["x"])
  with pytest.raises(NotImplementedError, match="no closed-form density"):
    ds.log_prob(train["x"])
  with pytest.raises(ValueError, match="valid distributions"):
    get_dataset("toy2d", distribution="spiral")


def test_get_dataset_errors():
  valid = r"valid datasets: \['cifar10', 'digits', 'mnist', 'toy2d'\]"
  with pytest.raises(ValueError, match=valid):
    get_dataset("imagenet")
  with pytest.raises(ValueError, match="valid parameters: .*use_labels"):
    get_dataset("digits", path="/tmp")

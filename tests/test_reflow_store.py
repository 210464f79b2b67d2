"""The coupling store and the couplings data source (genode.reflow.store, .dataset)."""

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genode import gaussians, sampling
from genode.reflow import store
from genode.reflow.dataset import Couplings
from genode.reflow.permutation import FeistelPermutation

SIGMAS = sampling.get_sigmas("karras", 4, sigma_min=0.002, sigma_max=80.0)


def _teacher():
  return gaussians.Gaussian.random(jax.random.key(0), 2, jnp.float32)


def _settings(**overrides):
  values = dict(num_pairs=20, shard_size=8, batch_size=4, seed=3, shape=(2,),
                sigma_max=float(SIGMAS[0]), teacher={"workdir": "/w", "step": 7},
                sampler={"solver": "heun", "grid": "karras", "steps": 4})
  values.update(overrides)
  return store.CouplingSettings(**values)


def _teacher_sample():
  return store.make_teacher_sample(_teacher().denoiser, SIGMAS, "heun")


def _read_all(out):
  """{relative path: bytes} of every .npy file under `out`."""
  files = {}
  for root, _, names in os.walk(out):
    for name in names:
      if name.endswith(".npy"):
        path = os.path.join(root, name)
        with open(path, "rb") as f:
          files[os.path.relpath(path, out)] = f.read()
  return files


def test_stored_pairs_are_the_teachers_sampler_output(tmp_path, caplog):
  settings = _settings()
  out = str(tmp_path / "c")
  with caplog.at_level(logging.INFO):
    summary = store.write_couplings(out, _teacher_sample(), settings)
  assert "shard 3/3: 20/20 pairs" in caplog.text and "pairs/s, ETA 0:00:00" in caplog.text
  assert summary.shards_written == (0, 1, 2)
  manifest = store.read_manifest(out)
  assert manifest["complete"] and manifest["num_pairs_completed"] == 20
  assert manifest["nfe_per_batch"] == {"min": 7, "mean": 7.0, "max": 7}
  assert manifest["settings"]["teacher"] == {"workdir": "/w", "step": 7}
  assert manifest["genode_version"]
  teacher = _teacher()
  reference = jax.jit(  # the sampler, called directly on the same batch
      lambda z: sampling.sample(teacher.denoiser, jnp.float32(SIGMAS[0]) * z, SIGMAS, "heun")[0])
  for shard in range(3):
    z, _ = store.shard_inputs(settings, shard)
    rows = settings.shard_rows(shard)
    stored_z = np.load(os.path.join(store.shard_dir(out, shard), "z.npy"))
    stored_x = np.load(os.path.join(store.shard_dir(out, shard), "x.npy"))
    np.testing.assert_array_equal(stored_z, z[:rows])
    for b in range(0, rows, 4):
      np.testing.assert_array_equal(stored_x[b:b + 4], np.asarray(reference(z[b:b + 4]))[:rows - b])


def test_killed_and_resumed_equals_uninterrupted(tmp_path):
  settings = _settings()
  teacher_sample = _teacher_sample()
  full = str(tmp_path / "full")
  store.write_couplings(full, teacher_sample, settings)

  calls = []

  def dies_in_shard_2(z):
    calls.append(1)
    if len(calls) == 5:  # shard 0, 1 done (4 calls); killed inside shard 2
      raise KeyboardInterrupt
    return teacher_sample(z)

  resumed = str(tmp_path / "resumed")
  with pytest.raises(KeyboardInterrupt):
    store.write_couplings(resumed, dies_in_shard_2, settings)
  assert store.read_manifest(resumed)["shards_completed"] == [0, 1]
  os.makedirs(os.path.join(resumed, "shard_00002.tmp"))  # a half-written shard
  summary = store.write_couplings(resumed, teacher_sample, settings)
  assert summary.shards_skipped == (0, 1) and summary.shards_written == (2,)
  assert _read_all(resumed) == _read_all(full)
  assert not os.path.exists(os.path.join(resumed, "shard_00002.tmp"))


def test_processes_write_interleaved_shards_identical_to_one(tmp_path):
  settings = _settings()
  teacher_sample = _teacher_sample()
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  store.write_couplings(one, teacher_sample, settings)
  first = store.write_couplings(two, teacher_sample, settings, process_index=0, process_count=2)
  assert first.shards_written == (0, 2)
  assert not store.read_manifest(two)["complete"]
  second = store.write_couplings(two, teacher_sample, settings, process_index=1, process_count=2)
  assert second.shards_written == (1,)
  assert _read_all(two) == _read_all(one)
  assert store.read_manifest(two)["complete"]


def test_resume_with_other_settings_is_refused_unless_overwrite(tmp_path):
  out = str(tmp_path / "c")
  teacher_sample = _teacher_sample()
  store.write_couplings(out, teacher_sample, _settings())
  before = _read_all(out)
  manifest_before = open(os.path.join(out, "manifest.json")).read()
  for change in [dict(seed=4), dict(num_pairs=24), dict(shard_size=4),
                 dict(sampler={"solver": "euler"}), dict(teacher={"workdir": "/v", "step": 7})]:
    with pytest.raises(ValueError, match="other settings.*overwrite") as info:
      store.write_couplings(out, teacher_sample, _settings(**change))
    assert "\n" not in str(info.value)
    assert _read_all(out) == before
    assert open(os.path.join(out, "manifest.json")).read() == manifest_before
  store.write_couplings(out, teacher_sample, _settings(seed=4), overwrite=True)
  assert store.read_manifest(out)["settings"]["seed"] == 4
  assert _read_all(out) != before


def test_overwrite_by_one_process_never_reuses_another_processes_stale_shards(tmp_path):
  out, fresh = str(tmp_path / "c"), str(tmp_path / "fresh")
  teacher_sample = _teacher_sample()
  store.write_couplings(out, teacher_sample, _settings(num_pairs=40))  # 5 shards
  new = _settings(seed=4)  # 3 shards
  store.write_couplings(out, teacher_sample, new, process_index=0, process_count=2,
                        overwrite=True)
  assert not store.read_manifest(out)["complete"]
  summary = store.write_couplings(out, teacher_sample, new, process_index=1, process_count=2)
  assert summary.shards_written == (1,)
  store.write_couplings(fresh, teacher_sample, new)
  assert _read_all(out) == _read_all(fresh)
  assert sorted(n for n in os.listdir(out) if n.startswith("shard_")) == [
      "shard_00000", "shard_00001", "shard_00002"]


def test_labels_are_stored_and_passed_to_the_teacher(tmp_path):
  settings = _settings(num_classes=3)
  out = str(tmp_path / "c")
  store.write_couplings(out, lambda z, label: z + label[:, None].astype(np.float32), settings)
  data = Couplings(out)
  assert data.num_classes == 3
  pairs = data.split("train")
  shifted = pairs["noise"] + pairs["label"][:, None].astype(np.float32)
  np.testing.assert_array_equal(pairs["x"], shifted)
  assert set(np.unique(pairs["label"])) <= {0, 1, 2}


def test_feistel_permutation_is_a_bijection():
  for n in [1, 2, 3, 7, 64, 1000, 4099]:
    perm = FeistelPermutation(5, 2, n)[np.arange(n)]
    np.testing.assert_array_equal(np.sort(perm), np.arange(n))
  a, b = FeistelPermutation(5, 0, 1000), FeistelPermutation(5, 1, 1000)
  assert not np.array_equal(a[np.arange(1000)], b[np.arange(1000)])
  np.testing.assert_array_equal(a[[3, 9]], FeistelPermutation(5, 0, 1000)[[3, 9]])


def test_couplings_dataset(tmp_path):
  settings = _settings(num_pairs=21, shard_size=4, batch_size=2)
  out = str(tmp_path / "c")
  store.write_couplings(out, _teacher_sample(), settings)
  data = Couplings(out, expected_shape=(2,))
  assert data.shape == (2,) and data.num_classes == 0 and data.quantization_levels == 0
  assert data.teacher == {"workdir": "/w", "step": 7}
  data.check_teacher(workdir="/w", step=7)
  with pytest.raises(ValueError, match="another teacher.*step: 7 .expected 8"):
    data.check_teacher(workdir="/w", step=8)
  assert hash(Couplings(out, expected_shape=[2])) == hash(Couplings(out, expected_shape=(2,)))
  assert isinstance(data._shards[0]["x"], np.memmap)
  every = data.split("train")
  assert every["x"].shape == (21, 2) and every["x"].dtype == np.float32
  # the batch at step k is a pure function of (seed, k); processes split the rows
  batch = data.train_batch(0, 3, 8)
  assert set(batch) == {"x", "noise"} and batch["x"].shape == (8, 2)
  again = Couplings(out).train_batch(0, 3, 8)
  np.testing.assert_array_equal(batch["x"], again["x"])
  halves = [data.train_batch(0, 3, 8, p, 2) for p in range(2)]
  np.testing.assert_array_equal(np.concatenate([h["noise"] for h in halves]), batch["noise"])
  assert not np.array_equal(data.train_batch(1, 3, 8)["x"], batch["x"])
  # pairs stay paired: (noise, x) rows are rows of the store
  stored = {tuple(z) + tuple(x) for z, x in zip(every["noise"], every["x"])}
  assert all(tuple(z) + tuple(x) in stored for z, x in zip(batch["noise"], batch["x"]))
  # one epoch (21 pairs, batch 7 × 3 steps) visits every pair once
  epoch = np.concatenate([data.train_batch(2, k, 7)["noise"] for k in range(3)])
  np.testing.assert_array_equal(np.sort(epoch[:, 0]), np.sort(every["noise"][:, 0]))
  with pytest.raises(ValueError, match="no 'test' split"):
    data.split("test")


def test_couplings_dataset_bad_input(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist") as info:
    Couplings(str(tmp_path / "missing"))
  assert "\n" not in str(info.value)
  out = str(tmp_path / "c")
  settings = _settings()
  store.write_couplings(out, _teacher_sample(), settings, process_index=0, process_count=2)
  with pytest.raises(ValueError, match="incomplete"):
    Couplings(out)
  store.write_couplings(out, _teacher_sample(), settings, process_index=1, process_count=2)
  with pytest.raises(ValueError, match=r"shape \(2,\), expected \(8, 8, 1\)"):
    Couplings(out, expected_shape=(8, 8, 1))
  with open(os.path.join(out, "manifest.json")) as f:
    assert json.load(f)["complete"]


def test_conditional_teacher_sample_and_nonfinite_teacher(tmp_path):
  teacher = _teacher()
  conditional = store.make_teacher_sample(
      lambda labels: (lambda x, s: teacher.denoiser(x, s) + labels[:, None]), SIGMAS, "euler",
      conditional=True)
  out = str(tmp_path / "c")
  store.write_couplings(out, conditional, _settings(num_classes=2))
  pairs = Couplings(out).split("train")
  assert pairs["label"].shape == (20,)
  with pytest.raises(ValueError, match="non-finite"):
    store.write_couplings(str(tmp_path / "nan"), lambda z: z * np.nan, _settings())
  assert store.completed_shards(str(tmp_path / "nan"), _settings()) == []

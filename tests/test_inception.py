"""Inception-v3 (FID) network: shapes, torch → Flax conversion, the weights file, inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genode.evaluation import convert_inception, inception


@pytest.fixture(scope="module")
def shapes():
  return inception.variable_shapes()


def _torch_state_dict(shapes, rng):
  """A random state dict in pytorch-fid's layout and names, matching `shapes`."""
  state = {"fc.weight": np.zeros((1008, 2048)), "fc.bias": np.zeros(1008)}
  for key, shape in shapes.items():
    collection, *path, leaf = key.split("/")
    module = ".".join(path)
    if leaf == "kernel":
      state[f"{module}.weight"] = 0.05 * rng.standard_normal(
          (shape[3], shape[2], shape[0], shape[1]), np.float32)
    else:
      name = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}[leaf]
      low = 0.5 if leaf in ("scale", "var") else -0.1
      state[f"{module}.{name}"] = rng.uniform(low, low + 0.6, size=shape)
      if leaf == "var":
        state[f"{module}.num_batches_tracked"] = np.array(0)
  return state


def test_network_shapes(shapes):
  # 94 conv+BN layers of torchvision's Inception3 without the aux head; 21.8M parameters
  # (23.9M minus the 1008-way fc); pool3 is 2048-d for 299×299 input.
  variables = jax.eval_shape(inception.InceptionV3().init, jax.random.key(0),
                             jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32))
  assert len(inception.conv_layer_names(variables)) == 94
  assert sum(int(np.prod(s)) for s in shapes.values()) == 21_820_000
  assert shapes["params/Conv2d_1a_3x3/conv/kernel"] == (3, 3, 3, 32)
  assert shapes["params/Mixed_6b/branch7x7_2/conv/kernel"] == (1, 7, 128, 128)
  assert shapes["batch_stats/Mixed_7c/branch_pool/bn/var"] == (192,)
  out = jax.eval_shape(inception.InceptionV3().apply, variables,
                       jax.ShapeDtypeStruct((5, 299, 299, 3), jnp.float32))
  assert out.shape == (5, inception.FEATURE_DIM)


def test_converted_conv_bn_matches_torch_semantics():
  # A (1, 7) conv with padding (0, 3) as torch computes it (NCHW, OIHW weights,
  # BN y = (x − mean)/√(var + ε)·weight + bias), against the converted Flax layer.
  rng = np.random.default_rng(0)
  w = rng.normal(size=(5, 4, 1, 7)).astype(np.float32)
  bn = {k: rng.uniform(0.5, 1.5, 5).astype(np.float32)
        for k in ("weight", "bias", "running_mean", "running_var")}
  state = {"L.conv.weight": w, **{f"L.bn.{k}": v for k, v in bn.items()}}
  flat = convert_inception.convert_state_dict(state)
  variables = {"params": {"conv": {"kernel": flat["params/L/conv/kernel"]},
                          "bn": {"scale": flat["params/L/bn/scale"],
                                 "bias": flat["params/L/bn/bias"]}},
               "batch_stats": {"bn": {"mean": flat["batch_stats/L/bn/mean"],
                                      "var": flat["batch_stats/L/bn/var"]}}}
  x = rng.normal(size=(2, 4, 6, 9)).astype(np.float32)  # NCHW
  conv = jax.lax.conv_general_dilated(x, w, (1, 1), ((0, 0), (3, 3)),
                                      dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                      precision="highest")
  c = lambda v: v[None, :, None, None]
  expected = np.maximum((conv - c(bn["running_mean"])) / np.sqrt(c(bn["running_var"]) + 1e-3)
                        * c(bn["weight"]) + c(bn["bias"]), 0)
  layer = inception.BasicConv2d(5, (1, 7), padding=(0, 3))
  with jax.default_matmul_precision("highest"):
    got = layer.apply(variables, np.transpose(x, (0, 2, 3, 1)))
  np.testing.assert_allclose(np.transpose(got, (0, 3, 1, 2)), expected, rtol=1e-5, atol=1e-5)


def test_average_pool_does_not_count_padding():
  # TF / pytorch-fid (count_include_pad=False): the corner of a 3×3 ones image averages 4
  # ones, not 4/9.
  x = jnp.arange(9.0).reshape(1, 3, 3, 1)
  got = np.asarray(inception._avg_pool_3x3(x))[0, :, :, 0]
  assert got[0, 0] == pytest.approx((0 + 1 + 3 + 4) / 4)
  assert got[1, 1] == pytest.approx(4.0)
  assert got[0, 1] == pytest.approx((0 + 1 + 2 + 3 + 4 + 5) / 6)


def test_preprocess_is_bilinear_with_half_pixel_centres():
  # F.interpolate(align_corners=False): [0, 1] → 4 pixels samples at −¼, ¼, ¾, 1¼ (clamped).
  row = jnp.array([0.0, 1.0]).reshape(1, 1, 2, 1) * jnp.ones((1, 2, 1, 1))
  out = np.asarray(inception.preprocess(row, size=4))
  assert out.shape == (1, 4, 4, 3)
  np.testing.assert_allclose(out[0, 0, :, 0], [0.0, 0.25, 0.75, 1.0], atol=1e-6)
  np.testing.assert_allclose(out[..., 0], out[..., 2])  # grayscale repeated
  with pytest.raises(ValueError, match=r"\(B, H, W, 1 or 3\)"):
    inception.preprocess(jnp.zeros((2, 8, 8, 2)))


@pytest.mark.slow
def test_weights_file_round_trip_and_features(shapes, tmp_path, monkeypatch):
  # torch-layout random weights → `python -m genode.evaluation.convert_inception` (torch.load
  # replaced) → .npz → load → pool3 features on 75×75 input (the smallest Inception-v3
  # accepts); features are post-ReLU averages, deterministic.
  rng = np.random.default_rng(1)
  state = _torch_state_dict(shapes, rng)
  monkeypatch.setattr(convert_inception, "_load_torch_state_dict",
                      lambda path: state if path == "fid.pth" else None)
  path = tmp_path / "sub" / "inception.npz"
  convert_inception.main(["--input=fid.pth", f"--output={path}"])
  variables = inception.load_weights(path)
  np.testing.assert_array_equal(
      variables["params"]["Mixed_5b"]["branch5x5_2"]["conv"]["kernel"][1, 3],
      state["Mixed_5b.branch5x5_2.conv.weight"][:, :, 1, 3].T.astype(np.float32))
  np.testing.assert_array_equal(variables["batch_stats"]["Conv2d_4a_3x3"]["bn"]["var"],
                                state["Conv2d_4a_3x3.bn.running_var"].astype(np.float32))
  images = rng.uniform(-1, 1, size=(3, 12, 12, 1))
  features = inception.inception_features(variables, images, batch_size=2, size=75)
  assert features.shape == (3, 2048) and np.all(np.isfinite(features)) and features.min() >= 0
  again = inception.inception_features(variables, images[1:2], size=75)
  np.testing.assert_allclose(again[0], features[1], rtol=1e-4, atol=1e-5)


def test_missing_or_wrong_weights_file(tmp_path, shapes):
  with pytest.raises(FileNotFoundError, match="convert_inception --input=pt_inception"):
    inception.load_weights(tmp_path / "nope.npz")
  flat = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
  del flat["params/Conv2d_1a_3x3/conv/kernel"]
  flat["params/extra"] = np.zeros(3)
  np.savez(tmp_path / "bad.npz", **flat)
  with pytest.raises(ValueError, match=r"1 missing keys \['params/Conv2d_1a_3x3/conv/kernel'\]"):
    inception.load_weights(tmp_path / "bad.npz")
  with pytest.raises(ValueError, match="unexpected entry 'Mixed_5b.branch1x1.foo'"):
    convert_inception.convert_state_dict({"Mixed_5b.branch1x1.foo": np.zeros(2)})

"""Models: the call signature, zero output at init, dropout, labels, sizes, parameter count.

Parameters are initialized with the "rbg" PRNG implementation: it compiles several
times faster than threefry on CPU, and the tests only need some random parameters.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genode.models import MLP, UNet, count_params, get_model
from genode.models.embeddings import fourier_embedding, labels_or_null, positional_embedding
from genode.models.unet import num_groups


def _key(seed):
  return jax.random.key(seed, impl="rbg")


def _perturbed(variables, scale=0.1, seed=0):
  """The same pytree with every parameter moved by N(0, scale²) (makes F ≠ 0)."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda p: p + scale * rng.standard_normal(p.shape).astype(p.dtype), variables)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _apply(model, variables, x, noise, labels, train, key):
  return model.apply(variables, x, noise, labels, train=train, rngs={"dropout": key})


# -- embeddings ----------------------------------------------------------------


def test_positional_embedding_closed_form():
  c = jnp.array([0.0, 3.0])
  emb = positional_embedding(c, 8, max_positions=10_000.0)
  freqs = 10_000.0 ** -(np.arange(4) / 3)  # endpoint: last frequency is 1/max
  want = np.concatenate([np.sin(np.outer(c, freqs)), np.cos(np.outer(c, freqs))], -1)
  np.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-6)


def test_fourier_embedding_is_fixed_and_unit_norm():
  c = jnp.array([-1.3, 0.2, 5.0])
  a, b = fourier_embedding(c, 16), fourier_embedding(c, 16)
  np.testing.assert_array_equal(a, b)
  # [cos, sin] pairs: every row has squared norm dim/2.
  np.testing.assert_allclose(jnp.sum(a**2, -1), 8.0, rtol=1e-5)


def test_embedding_rejects_bad_shapes():
  with pytest.raises(ValueError, match=r"\(B,\)"):
    positional_embedding(jnp.zeros((2, 1)), 8)
  with pytest.raises(ValueError, match="even"):
    fourier_embedding(jnp.zeros(2), 7)


def test_labels_or_null():
  labels = jnp.array([0, 1, 2, 1])
  np.testing.assert_array_equal(labels_or_null(None, 4, 3, 0.5, True, _key(0)), [3, 3, 3, 3])
  np.testing.assert_array_equal(labels_or_null(labels, 4, 3, 0.5, False), labels)
  np.testing.assert_array_equal(labels_or_null(labels, 4, 3, 1.0, True, _key(0)), [3, 3, 3, 3])
  dropped = labels_or_null(jnp.zeros(10_000, jnp.int32), 10_000, 3, 0.25, True, _key(1))
  assert set(np.unique(dropped)) == {0, 3}
  assert abs(float(jnp.mean(dropped == 3)) - 0.25) < 0.02  # 4.6σ of a binomial mean
  with pytest.raises(ValueError, match="integers of shape"):
    labels_or_null(jnp.zeros(4), 4, 3, 0.0, False)


def test_num_groups_divides_channels():
  assert num_groups(256) == 32 and num_groups(128) == 32 and num_groups(64) == 16
  assert num_groups(3) == 1 and num_groups(8) == 2 and num_groups(136) == 17
  for c in range(1, 300):
    g = num_groups(c)
    assert c % g == 0 and 1 <= g <= 32


# -- MLP -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_mlp():
  model = get_model("mlp", hidden_dims=[16, 16], embedding_dim=8, num_classes=3,
                    label_dropout=1.0, dropout=0.5)
  x = jax.random.normal(_key(1), (6, 2))
  variables = jax.jit(model.init)(_key(0), x, jnp.zeros(6))
  return model, variables, x


def test_mlp_zero_at_init(tiny_mlp):
  model, variables, x = tiny_mlp
  noise = jnp.linspace(-1, 1, 6)
  f = _apply(model, variables, x, noise, jnp.arange(6) % 3, False, _key(0))
  assert f.shape == (6, 2)
  np.testing.assert_array_equal(f, 0.0)  # zero output layer ⇒ D = c_skip·x
  f = _apply(model, _perturbed(variables), x, noise, jnp.arange(6) % 3, False, _key(0))
  assert float(jnp.min(jnp.abs(f))) > 0
  assert count_params(variables) == count_params(_perturbed(variables)) > 0


@pytest.mark.parametrize("formulation", ["edm", "vp", "rf"])
def test_zero_initialized_network_makes_the_skip_only_denoiser(tiny_mlp, formulation):
  from genode.denoiser import precondition
  from genode.formulations import get_formulation
  model, variables, x = tiny_mlp
  form = get_formulation(formulation)
  network = lambda x_in, c_noise: _apply(model, variables, x_in, c_noise, None, False, _key(0))
  sigma = jnp.array([0.01, 0.1, 1.0, 3.0, 10.0, 50.0])
  c_skip = form.preconditioning(sigma).c_skip
  np.testing.assert_allclose(precondition(form, network)(x, sigma), c_skip[:, None] * x,
                             rtol=1e-6)


def test_mlp_labels_label_dropout_and_dropout(tiny_mlp):
  model, variables, x = tiny_mlp
  noise = jnp.linspace(0, 2, 6)
  labels = jnp.array([0, 1, 2, 0, 1, 2])
  v = _perturbed(variables)
  eval_labels = _apply(model, v, x, noise, labels, False, _key(0))
  eval_other = _apply(model, v, x, noise, (labels + 1) % 3, False, _key(0))
  eval_none = _apply(model, v, x, noise, None, False, _key(0))
  eval_null = _apply(model, v, x, noise, jnp.full(6, 3), False, _key(0))
  assert float(jnp.max(jnp.abs(eval_labels - eval_other))) > 1e-3  # labels matter
  np.testing.assert_array_equal(eval_none, eval_null)  # None = the null class
  # Dropout draws from "dropout" only in training: eval ignores the key.
  np.testing.assert_array_equal(eval_labels, _apply(model, v, x, noise, labels, False, _key(5)))
  train_a = _apply(model, v, x, noise, labels, True, _key(2))
  train_b = _apply(model, v, x, noise, labels, True, _key(3))
  assert float(jnp.max(jnp.abs(train_a - train_b))) > 1e-3
  # With label_dropout = 1 and no hidden dropout, training sees only the null class.
  no_dropout = model.clone(dropout=0.0)
  np.testing.assert_allclose(_apply(no_dropout, v, x, noise, labels, True, _key(2)),
                             eval_none, rtol=1e-6, atol=1e-6)


def test_unconditional_model_rejects_labels():
  model = MLP(hidden_dims=(8,), embedding_dim=8)
  with pytest.raises(ValueError, match="unconditional"):
    model.init(_key(0), jnp.ones((2, 2)), jnp.zeros(2), jnp.array([0, 1]))


# -- U-Net ---------------------------------------------------------------------

TINY_UNET = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                 attention_resolutions=(4,), dropout=0.5, num_classes=3, label_dropout=0.0)


@pytest.fixture(scope="module")
def tiny_unet():
  model = get_model("unet", **TINY_UNET)
  x = jax.random.normal(_key(1), (2, 8, 8, 1))
  variables = jax.jit(model.init)(_key(0), x, jnp.zeros(2))
  return model, variables, x


def test_unet_zero_at_init(tiny_unet):
  model, variables, x = tiny_unet
  f = _apply(model, variables, x, jnp.array([0.3, -1.0]), jnp.array([0, 2]), False, _key(0))
  assert f.shape == x.shape
  np.testing.assert_array_equal(f, 0.0)


def test_unet_dropout_only_in_training_and_labels_matter(tiny_unet):
  model, variables, x = tiny_unet
  v = _perturbed(variables, scale=0.05)
  noise, labels = jnp.array([0.3, -1.0]), jnp.array([0, 2])
  eval_a = _apply(model, v, x, noise, labels, False, _key(0))
  eval_b = _apply(model, v, x, noise, labels, False, _key(1))
  np.testing.assert_array_equal(eval_a, eval_b)
  eval_other = _apply(model, v, x, noise, jnp.array([1, 1]), False, _key(0))
  assert float(jnp.max(jnp.abs(eval_a - eval_other))) > 1e-4
  train_a = _apply(model, v, x, noise, labels, True, _key(0))
  train_b = _apply(model, v, x, noise, labels, True, _key(1))
  assert float(jnp.max(jnp.abs(train_a - train_b))) > 1e-4
  assert float(jnp.max(jnp.abs(train_a - eval_a))) > 1e-4


@pytest.mark.parametrize("size, mults, scale_shift", [
    ((28, 28, 1), (1, 2, 2), False), ((32, 32, 3), (1, 2, 2), True),
    ((16, 8, 2), (1, 1, 2, 2), False)])
def test_unet_output_shapes(size, mults, scale_shift):
  model = UNet(base_channels=4, channel_mults=mults, num_res_blocks=1,
               attention_resolutions=(7, 8), scale_shift=scale_shift, embedding_type="fourier")
  x = jax.ShapeDtypeStruct((3, *size), jnp.float32)
  noise = jax.ShapeDtypeStruct((3,), jnp.float32)
  variables = jax.eval_shape(model.init, _key(0), x, noise)
  out = jax.eval_shape(model.apply, variables, x, noise)
  assert out.shape == (3, *size) and out.dtype == jnp.float32


def test_unet_rejects_sizes_it_cannot_halve():
  model = UNet(base_channels=4, channel_mults=(1, 2, 2), num_res_blocks=1)
  x = jax.ShapeDtypeStruct((1, 30, 30, 1), jnp.float32)
  with pytest.raises(ValueError, match="divisible by 4"):
    jax.eval_shape(model.init, _key(0), x, jax.ShapeDtypeStruct((1,), jnp.float32))
  with pytest.raises(ValueError, match="NHWC"):
    model.check_input_shape((1, 32, 32))


def test_cifar10_ddpmpp_parameter_count():
  """configs/cifar10_edm.py builds EDM's CIFAR-10 DDPM++ (config F): 55.73 M parameters
  (EDM Table 7 lists 56 M); read from the config itself, so that config drift fails."""
  from configs import cifar10_edm  # pylint: disable=g-import-not-at-top
  from genode.experiment import Experiment  # pylint: disable=g-import-not-at-top
  experiment = Experiment.from_config(cifar10_edm.get_config(), validate=False,
                                      for_training=False)
  assert count_params(experiment.abstract_state().params) == 55_732_739


def test_get_model_errors():
  with pytest.raises(ValueError, match=r"valid models: \['concatsquash', 'mlp', 'unet'\]"):
    get_model("transformer")
  with pytest.raises(ValueError, match="valid fields: .*base_channels"):
    get_model("unet", channels=3)
  with pytest.raises(ValueError, match="valid types"):
    UNet(embedding_type="sinusoid").check_input_shape((1, 8, 8, 1))
  assert get_model("mlp", hidden_dims=[4, 4]).hidden_dims == (4, 4)

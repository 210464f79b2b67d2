"""Elementwise transforms g(x; h) that a coupling applies to its transformed half.

Each transform is a frozen dataclass (an object, not a name) with

  params_per_element: P, the conditioner outputs it needs per element;
  zero_init_conditioner: whether the conditioner's last layer starts at zero;
  extra_params(module): parameters of the transform itself, created on `module`;
  __call__(x, h, extra, inverse) -> (g(x), log|g'(x)|) elementwise, x (...,), h (..., P).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from genode.flows.splines import num_spline_params, rational_quadratic_spline


@dataclasses.dataclass(frozen=True)
class AdditiveTransform:
  """NICE's additive coupling (Dinh et al. 2014, eq. 5–6): y = x + m(h), log-det 0."""

  params_per_element = 1
  zero_init_conditioner = True

  def extra_params(self, module: nn.Module):
    return None

  def __call__(self, x, h, extra, inverse: bool):
    shift = h[..., 0]
    y = x - shift if inverse else x + shift
    return y, jnp.zeros_like(x)


@dataclasses.dataclass(frozen=True)
class AffineTanhTransform:
  """RealNVP's affine coupling (Dinh et al. 2016, eq. 7): y = x·exp(s) + t.

  The log-scale is bounded, s = a·tanh(h_s), with a learnable scalar a initialised to 0
  (the official `real_nvp_multiscale_dataset.py` "rescaling_scale"), so every coupling
  starts as a shift. The conditioner keeps its default (non-zero) init: with a = 0 and a
  zero last layer, both a and h_s would have zero gradient.
  """

  params_per_element = 2
  zero_init_conditioner = False

  def extra_params(self, module: nn.Module):
    return module.param("tanh_scale", nn.initializers.zeros, ())

  def __call__(self, x, h, extra, inverse: bool):
    shift, log_scale = h[..., 0], extra * jnp.tanh(h[..., 1])
    if inverse:
      return (x - shift) * jnp.exp(-log_scale), -log_scale
    return x * jnp.exp(log_scale) + shift, log_scale


@dataclasses.dataclass(frozen=True)
class AffineSigmoidTransform:
  """Glow's affine coupling (Kingma & Dhariwal 2018, Table 1): y = (x + t)·σ(h_s + 2).

  With the zero-initialised last layer the scale starts at σ(2) ≈ 0.88, and it stays in
  (0, 1), which bounds the forward map (openai/glow `model.py`).
  """

  params_per_element = 2
  zero_init_conditioner = True

  def extra_params(self, module: nn.Module):
    return None

  def __call__(self, x, h, extra, inverse: bool):
    shift, log_scale = h[..., 0], jax.nn.log_sigmoid(h[..., 1] + 2.0)
    if inverse:
      return x * jnp.exp(-log_scale) - shift, -log_scale
    return (x + shift) * jnp.exp(log_scale), log_scale


@dataclasses.dataclass(frozen=True)
class SplineTransform:
  """Rational-quadratic spline coupling (Durkan et al. 2019, NSF §3.1, eq. 4–7).

  K bins on [−B, B], identity (linear tails) outside; zero conditioner output gives the
  identity map.
  """

  num_bins: int = 8
  bound: float = 3.0
  zero_init_conditioner = True

  @property
  def params_per_element(self) -> int:
    return num_spline_params(self.num_bins)

  def extra_params(self, module: nn.Module):
    return None

  def __call__(self, x, h, extra, inverse: bool):
    return rational_quadratic_spline(x, h, num_bins=self.num_bins, bound=self.bound,
                                     inverse=inverse)


def make_transform(kind: str, *, num_bins: int = 8, spline_bound: float = 3.0):
  """Resolves a coupling kind once: "additive" | "affine_tanh" | "affine_sigmoid" | "spline"."""
  transforms = {
      "additive": AdditiveTransform(),
      "affine_tanh": AffineTanhTransform(),
      "affine_sigmoid": AffineSigmoidTransform(),
      "spline": SplineTransform(num_bins, spline_bound),
  }
  if kind not in transforms:
    raise ValueError(f"Unknown coupling transform {kind!r}; valid: {sorted(transforms)}")
  return transforms[kind]

"""Monotone rational-quadratic splines with linear tails (Durkan et al. 2019, NSF §3.1).

On [−B, B] the map is a monotone rational-quadratic spline of K bins, with knots
(x^k, y^k) and positive knot derivatives δ^k; outside [−B, B] it is the identity
(linear tails of slope 1, so the boundary derivatives are fixed to 1). Unconstrained
parameters, per element, are K bin widths, K bin heights and K − 1 interior
derivatives, 3K − 1 in all; zeros give the identity map (uniform bins, unit slopes).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3


def num_spline_params(num_bins: int) -> int:
  """3K − 1 unconstrained parameters per element."""
  return 3 * num_bins - 1


def _knots(raw: jax.Array, bound: float, min_size: float) -> tuple[jax.Array, jax.Array]:
  """Softmax bin sizes (…, K) → knot positions (…, K + 1) from −B to B and sizes (…, K)."""
  num_bins = raw.shape[-1]
  sizes = min_size + (1.0 - min_size * num_bins) * jax.nn.softmax(raw, axis=-1)
  cumulative = jnp.cumsum(sizes, axis=-1)
  cumulative = jnp.concatenate([jnp.zeros_like(cumulative[..., :1]), cumulative], axis=-1)
  knots = 2.0 * bound * cumulative - bound
  knots = knots.at[..., 0].set(-bound).at[..., -1].set(bound)
  return knots, knots[..., 1:] - knots[..., :-1]


def _gather(values: jax.Array, index: jax.Array) -> jax.Array:
  return jnp.take_along_axis(values, index[..., None], axis=-1)[..., 0]


def rational_quadratic_spline(x: jax.Array, params: jax.Array, *, num_bins: int,
                              bound: float, inverse: bool = False
                              ) -> tuple[jax.Array, jax.Array]:
  """Elementwise RQ spline (NSF eq. 4–7; inverse by the quadratic of NSF App. A).

  Args:
    x: inputs (...,) (outputs y when `inverse`).
    params: unconstrained parameters (..., 3K − 1): widths, heights, derivatives.
    num_bins: K.
    bound: B; the identity outside [−B, B].
    inverse: evaluate g⁻¹ instead of g.

  Returns:
    (g(x) or g⁻¹(y), log|dg/dx| or log|dg⁻¹/dy|), both (...,).
  """
  if params.shape[-1] != num_spline_params(num_bins):
    raise ValueError(f"rational_quadratic_spline: expected {num_spline_params(num_bins)} "
                     f"parameters per element for {num_bins} bins, got params of shape "
                     f"{params.shape}")
  raw_widths = params[..., :num_bins]
  raw_heights = params[..., num_bins:2 * num_bins]
  raw_derivatives = params[..., 2 * num_bins:]
  x_knots, widths = _knots(raw_widths, bound, MIN_BIN_WIDTH)
  y_knots, heights = _knots(raw_heights, bound, MIN_BIN_HEIGHT)
  # softplus(0 + c) = 1 − min: zero parameters give unit interior slopes.
  offset = math.log(math.expm1(1.0 - MIN_DERIVATIVE))
  interior = MIN_DERIVATIVE + jax.nn.softplus(raw_derivatives + offset)
  ones = jnp.ones_like(interior[..., :1])
  derivatives = jnp.concatenate([ones, interior, ones], axis=-1)  # (..., K + 1)

  inside = (x > -bound) & (x < bound)
  x_in = jnp.clip(x, -bound, bound)
  knots = y_knots if inverse else x_knots
  bin_index = jnp.sum(x_in[..., None] >= knots[..., 1:-1], axis=-1)  # in 0 … K − 1
  x_k, w_k = _gather(x_knots[..., :-1], bin_index), _gather(widths, bin_index)
  y_k, h_k = _gather(y_knots[..., :-1], bin_index), _gather(heights, bin_index)
  d_k = _gather(derivatives[..., :-1], bin_index)
  d_k1 = _gather(derivatives[..., 1:], bin_index)
  s_k = h_k / w_k  # the bin's slope s^k (NSF eq. 4)

  if not inverse:
    theta = (x_in - x_k) / w_k  # ξ ∈ [0, 1]
    theta_one_minus = theta * (1.0 - theta)
    denominator = s_k + (d_k1 + d_k - 2.0 * s_k) * theta_one_minus
    y = y_k + h_k * (s_k * theta**2 + d_k * theta_one_minus) / denominator  # NSF eq. 4
    derivative_numerator = s_k**2 * (d_k1 * theta**2 + 2.0 * s_k * theta_one_minus
                                     + d_k * (1.0 - theta)**2)  # NSF eq. 5
    log_det = jnp.log(derivative_numerator) - 2.0 * jnp.log(denominator)
  else:
    dy = x_in - y_k  # here x_in is the output y
    curvature = d_k + d_k1 - 2.0 * s_k
    a = h_k * (s_k - d_k) + dy * curvature  # NSF eq. 6–8
    b = h_k * d_k - dy * curvature
    c = -s_k * dy
    discriminant = jnp.maximum(b**2 - 4.0 * a * c, 0.0)
    theta = 2.0 * c / (-b - jnp.sqrt(discriminant))
    y = x_k + theta * w_k
    theta_one_minus = theta * (1.0 - theta)
    denominator = s_k + curvature * theta_one_minus
    derivative_numerator = s_k**2 * (d_k1 * theta**2 + 2.0 * s_k * theta_one_minus
                                     + d_k * (1.0 - theta)**2)
    log_det = -(jnp.log(derivative_numerator) - 2.0 * jnp.log(denominator))
  return jnp.where(inside, y, x), jnp.where(inside, log_det, 0.0)

"""The EDM design space: one object per formulation (Karras et al. 2022, Table 1).

A noisy sample is x = s(t)·(y + σ(t)·n), y ~ data, n ~ N(0, I) (EDM eq. 2 with
scaling). A formulation is the choice of

* the noise schedule σ(t) and scale s(t), with their time derivatives and σ⁻¹;
* the network preconditioning c_skip, c_out, c_in, c_noise (EDM eq. 7), so that
  D(x̄; σ) = c_skip(σ)·x̄ + c_out(σ)·F(c_in(σ)·x̄; c_noise(σ)), x̄ = x/s;
* the training noise distribution p_train(σ) and the loss weight λ(σ) (EDM eq. 8);
* default sampling bounds σ_min, σ_max (EDM Table 1, "Sampling").

Every object here is a frozen dataclass of floats: hashable, so it can be a static
argument of `jax.jit`, and printable. Nothing else in genode branches on a
formulation's name; names are resolved once, by `get_formulation`.

All methods take and return JAX arrays (or Python floats) and broadcast.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Preconditioning(NamedTuple):
  """EDM eq. 7 coefficients at a noise level σ."""

  c_skip: jax.Array
  c_out: jax.Array
  c_in: jax.Array
  c_noise: jax.Array


@dataclasses.dataclass(frozen=True)
class Formulation(abc.ABC):
  """σ(t), s(t), preconditioning, training σ and λ(σ) of one row of EDM Table 1."""

  sigma_min: float
  sigma_max: float

  # -- schedule -------------------------------------------------------------
  @abc.abstractmethod
  def sigma(self, t):
    """σ(t)."""

  @abc.abstractmethod
  def sigma_inv(self, sigma):
    """t(σ), the inverse of σ(t)."""

  def sigma_deriv(self, t):
    """σ̇(t) = dσ/dt (autodiff unless a closed form is given)."""
    return _elementwise_grad(self.sigma, t)

  def scale(self, t):
    """s(t); 1 unless the formulation rescales x."""
    return jnp.ones_like(jnp.asarray(t, dtype=jnp.result_type(float)))

  def scale_deriv(self, t):
    """ṡ(t) = ds/dt."""
    return _elementwise_grad(self.scale, t)

  @property
  def t_min(self) -> float:
    return float(self.sigma_inv(self.sigma_min))

  @property
  def t_max(self) -> float:
    return float(self.sigma_inv(self.sigma_max))

  # -- network --------------------------------------------------------------
  @abc.abstractmethod
  def preconditioning(self, sigma) -> Preconditioning:
    """(c_skip, c_out, c_in, c_noise) at σ (EDM Table 1, "Network and preconditioning")."""

  # -- training -------------------------------------------------------------
  @abc.abstractmethod
  def sample_training_sigma(self, key, shape):
    """σ ~ p_train (EDM Table 1, "Training")."""

  @abc.abstractmethod
  def loss_weight(self, sigma):
    """λ(σ) in E λ(σ)‖D(y + σn; σ) − y‖² (EDM eq. 8)."""


def _elementwise_grad(fn, t):
  t = jnp.asarray(t, dtype=jnp.result_type(float))
  return jnp.vectorize(jax.grad(fn))(t)


# ---------------------------------------------------------------------------
# The four continuous rows of EDM Table 1.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VP(Formulation):
  """Variance preserving (DDPM++, Song et al. 2021), EDM Table 1 column "VP".

  σ(t) = √(e^{½β_d t² + β_min t} − 1), s(t) = 1/√(1 + σ(t)²).
  """

  sigma_min: float = 0.0  # replaced in __post_init__ by σ(epsilon_s)
  sigma_max: float = 0.0  # replaced in __post_init__ by σ(1)
  beta_d: float = 19.9
  beta_min: float = 0.1
  num_noise_levels: int = 1000  # M
  epsilon_t: float = 1e-5  # training: t ~ U(ε_t, 1)
  epsilon_s: float = 1e-3  # sampling ends at t = ε_s

  def __post_init__(self):
    if self.sigma_min == 0.0:
      object.__setattr__(self, "sigma_min", float(self.sigma(self.epsilon_s)))
    if self.sigma_max == 0.0:
      object.__setattr__(self, "sigma_max", float(self.sigma(1.0)))

  def _exponent(self, t):
    return 0.5 * self.beta_d * t**2 + self.beta_min * t

  def sigma(self, t):
    return jnp.sqrt(jnp.expm1(self._exponent(t)))

  def sigma_deriv(self, t):
    # d/dt √(e^{a(t)} − 1) = a'(t) e^{a(t)} / (2σ(t)).
    return (self.beta_d * t + self.beta_min) * jnp.exp(self._exponent(t)) / (2 * self.sigma(t))

  def sigma_inv(self, sigma):
    # Solve ½β_d t² + β_min t = ln(1 + σ²) for t ≥ 0.
    return (jnp.sqrt(self.beta_min**2 + 2 * self.beta_d * jnp.log1p(sigma**2))
            - self.beta_min) / self.beta_d

  def scale(self, t):
    return jnp.exp(-0.5 * self._exponent(t))

  def scale_deriv(self, t):
    return -0.5 * (self.beta_d * t + self.beta_min) * self.scale(t)

  def preconditioning(self, sigma):
    return Preconditioning(
        c_skip=jnp.ones_like(sigma),
        c_out=-sigma,
        c_in=1 / jnp.sqrt(sigma**2 + 1),
        c_noise=(self.num_noise_levels - 1) * self.sigma_inv(sigma),
    )

  def sample_training_sigma(self, key, shape):
    t = jax.random.uniform(key, shape, minval=self.epsilon_t, maxval=1.0)
    return self.sigma(t)

  def loss_weight(self, sigma):
    return 1 / sigma**2


@dataclasses.dataclass(frozen=True)
class VE(Formulation):
  """Variance exploding (NCSN++, Song et al. 2021), EDM Table 1 column "VE".

  σ(t) = √t, s(t) = 1.
  """

  sigma_min: float = 0.02
  sigma_max: float = 100.0

  def sigma(self, t):
    return jnp.sqrt(t)

  def sigma_deriv(self, t):
    return 0.5 / jnp.sqrt(t)

  def sigma_inv(self, sigma):
    return sigma**2

  def preconditioning(self, sigma):
    return Preconditioning(
        c_skip=jnp.ones_like(sigma),
        c_out=sigma,
        c_in=jnp.ones_like(sigma),
        c_noise=jnp.log(0.5 * sigma),
    )

  def sample_training_sigma(self, key, shape):
    log_sigma = jax.random.uniform(key, shape, minval=math.log(self.sigma_min),
                                   maxval=math.log(self.sigma_max))
    return jnp.exp(log_sigma)

  def loss_weight(self, sigma):
    return 1 / sigma**2


@dataclasses.dataclass(frozen=True)
class EDM(Formulation):
  """Karras et al. 2022, EDM Table 1 column "EDM": σ(t) = t, s(t) = 1."""

  sigma_min: float = 0.002
  sigma_max: float = 80.0
  sigma_data: float = 0.5
  p_mean: float = -1.2
  p_std: float = 1.2

  def sigma(self, t):
    return jnp.asarray(t, dtype=jnp.result_type(float))

  def sigma_deriv(self, t):
    return jnp.ones_like(jnp.asarray(t, dtype=jnp.result_type(float)))

  def sigma_inv(self, sigma):
    return jnp.asarray(sigma, dtype=jnp.result_type(float))

  def preconditioning(self, sigma):
    sd2 = self.sigma_data**2
    return Preconditioning(
        c_skip=sd2 / (sigma**2 + sd2),
        c_out=sigma * self.sigma_data / jnp.sqrt(sigma**2 + sd2),
        c_in=1 / jnp.sqrt(sigma**2 + sd2),
        c_noise=0.25 * jnp.log(sigma),
    )

  def sample_training_sigma(self, key, shape):
    return jnp.exp(self.p_mean + self.p_std * jax.random.normal(key, shape))

  def loss_weight(self, sigma):
    sd = self.sigma_data
    return (sigma**2 + sd**2) / (sigma * sd) ** 2


@dataclasses.dataclass(frozen=True)
class RectifiedFlow(Formulation):
  """Rectified flow / flow matching (Liu et al. 2023; Lipman et al. 2023).

  x_t = (1 − t)·y + t·n, i.e. σ(t) = t/(1 − t), s(t) = 1 − t. The network F is the
  velocity v_θ(x_t, t) ≈ n − y; with c_skip = 1/(1+σ), c_out = −σ/(1+σ) the denoiser
  is D = x_t − t·v, and λ(σ) = (1+σ)²/σ² makes λ‖D − y‖² = ‖v_θ − (n − y)‖².
  Training t ~ U(0, 1) (`logit_normal=False`) or t = sigmoid(m + s·z), z ~ N(0,1)
  (Esser et al. 2024), which is ln σ ~ N(m, s²).
  """

  sigma_min: float = 1e-3 / (1 - 1e-3)  # t = 0.001
  sigma_max: float = (1 - 1e-3) / 1e-3  # t = 0.999
  logit_normal: bool = False
  logit_mean: float = 0.0
  logit_std: float = 1.0

  def sigma(self, t):
    return t / (1 - t)

  def sigma_deriv(self, t):
    return 1 / (1 - t) ** 2

  def sigma_inv(self, sigma):
    return sigma / (1 + sigma)

  def scale(self, t):
    return 1 - jnp.asarray(t, dtype=jnp.result_type(float))

  def scale_deriv(self, t):
    return -jnp.ones_like(jnp.asarray(t, dtype=jnp.result_type(float)))

  def preconditioning(self, sigma):
    return Preconditioning(
        c_skip=1 / (1 + sigma),
        c_out=-sigma / (1 + sigma),
        c_in=1 / (1 + sigma),
        c_noise=sigma / (1 + sigma),
    )

  def sample_training_sigma(self, key, shape):
    if self.logit_normal:
      return jnp.exp(self.logit_mean + self.logit_std * jax.random.normal(key, shape))
    # t ~ U(0, 1), kept off the endpoints where σ ∈ {0, ∞}.
    t = jax.random.uniform(key, shape, minval=1e-5, maxval=1 - 1e-5)
    return self.sigma(t)

  def loss_weight(self, sigma):
    return (1 + sigma) ** 2 / sigma**2


# ---------------------------------------------------------------------------
# Discrete DDPM (Ho et al. 2020): DDIM on a DDPM model is Euler in σ on x/s.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DDPM(Formulation):
  """Discrete DDPM with a linear β schedule: ᾱ_j = ∏_{i≤j} (1 − β_i), j = 0..T−1.

  s_j = √ᾱ_j, σ_j = √((1 − ᾱ_j)/ᾱ_j); the continuous time t ∈ [0, T−1] interpolates
  ln ᾱ linearly between the integer steps, so σ(t) is smooth enough for Euler/DDIM
  and its inverse is exact at the integers. ε-prediction preconditioning (EDM's
  VPPrecond with c_noise = t), training j ~ U{0, …, T−1}, λ(σ) = 1/σ² (the ε-loss).
  """

  sigma_min: float = 0.0  # replaced by σ_0
  sigma_max: float = 0.0  # replaced by σ_{T−1}
  beta_start: float = 1e-4
  beta_end: float = 0.02
  num_timesteps: int = 1000

  def __post_init__(self):
    if self.sigma_min == 0.0:
      object.__setattr__(self, "sigma_min", float(self.sigma(0.0)))
    if self.sigma_max == 0.0:
      object.__setattr__(self, "sigma_max", float(self.sigma(self.num_timesteps - 1.0)))

  def _log_alpha_bar_table(self):
    betas = jnp.linspace(self.beta_start, self.beta_end, self.num_timesteps,
                         dtype=jnp.result_type(float))
    return jnp.cumsum(jnp.log1p(-betas))

  def log_alpha_bar(self, t):
    table = self._log_alpha_bar_table()
    return jnp.interp(t, jnp.arange(self.num_timesteps, dtype=table.dtype), table)

  def sigma(self, t):
    return jnp.sqrt(jnp.expm1(-self.log_alpha_bar(t)))

  def sigma_inv(self, sigma):
    table = self._log_alpha_bar_table()  # decreasing in j
    log_alpha_bar = -jnp.log1p(sigma**2)
    steps = jnp.arange(self.num_timesteps, dtype=table.dtype)
    return jnp.interp(-log_alpha_bar, -table, steps)

  def scale(self, t):
    return jnp.exp(0.5 * self.log_alpha_bar(t))

  def preconditioning(self, sigma):
    return Preconditioning(
        c_skip=jnp.ones_like(sigma),
        c_out=-sigma,
        c_in=1 / jnp.sqrt(sigma**2 + 1),
        c_noise=self.sigma_inv(sigma),
    )

  def sample_training_sigma(self, key, shape):
    j = jax.random.randint(key, shape, 0, self.num_timesteps)
    return self.sigma(j.astype(jnp.result_type(float)))

  def loss_weight(self, sigma):
    return 1 / sigma**2


FORMULATIONS: dict[str, type[Formulation]] = {
    "vp": VP,
    "ve": VE,
    "edm": EDM,
    "rf": RectifiedFlow,
    "ddpm": DDPM,
}


def get_formulation(name: str, **params) -> Formulation:
  """Resolves a formulation name (and its parameters) to an object, once, at the config layer."""
  try:
    cls = FORMULATIONS[name]
  except KeyError:
    raise ValueError(
        f"Unknown formulation {name!r}; valid formulations: {sorted(FORMULATIONS)}") from None
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(params) - fields)
  if unknown:
    raise ValueError(f"Unknown parameters {unknown} for formulation {name!r}; "
                     f"valid parameters: {sorted(fields)}")
  return cls(**params)

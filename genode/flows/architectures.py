"""NICE, RealNVP and Glow as linen modules with one convention.

Conventions (every architecture):

  forward(x) -> (z, log_det):  x (B, *data_shape) in the data space the module sees;
      z (B, d), d = prod(data_shape): the factored-out latents of each level, flattened
      and concatenated in the order they leave the flow, then the last level's output;
      log_det (B,) = log|det ∂z/∂x|, including every preprocessing step (RealNVP's logit).
  inverse(z) -> x (B, *data_shape).
  log_prob(x) -> (B,) nats: log p_Z(z) + log_det, the density of x itself.
  sample(key, num, temperature=1.0) -> x (num, *data_shape): z = T·ε, ε from the prior.

Params come from `flow.init(key, x_batch, method="log_prob")` (a real batch: Glow's
ActNorm initialises from it). Fields are typed; `get_flow(name, **fields)` resolves a
name from `FLOWS` once.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from genode.flows.actnorm import ActNorm
from genode.flows.conv1x1 import Invertible1x1Conv, Invertible1x1ConvLU
from genode.flows.coupling import Coupling
from genode.flows.multiscale import check_squeezable, factor_in, factor_out, squeeze, unsqueeze
from genode.flows.priors import get_prior
from genode.flows.scaling import Homothety, LogitTransform
from genode.flows.transforms import make_transform


def _run_chain(layers, h, inverse: bool):
  """Applies bijectors in order (forward) or reversed with inverse=True; sums log-dets."""
  log_det = jnp.zeros(h.shape[:1], h.dtype)
  for layer in (reversed(layers) if inverse else layers):
    h, layer_log_det = layer(h, inverse=inverse)
    log_det = log_det + layer_log_det
  return h, log_det


class Flow(nn.Module):
  """Base: subclasses implement `__call__(x_or_z, inverse) -> (z_or_x, log_det)`."""

  @property
  def num_dims(self) -> int:
    return math.prod(self.data_shape)

  def _check_input(self, x: jax.Array, inverse: bool) -> None:
    expected = (self.num_dims,) if inverse else tuple(self.data_shape)
    if tuple(x.shape[1:]) != expected:
      what = "z" if inverse else "x"
      raise ValueError(f"{type(self).__name__}: expected {what} of shape (B, "
                       f"{', '.join(map(str, expected))}), got {tuple(x.shape)}")

  def forward(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x (B, *data_shape) → (z (B, d), log|det ∂z/∂x| (B,))."""
    return self(x, inverse=False)

  def inverse(self, z: jax.Array) -> jax.Array:
    """z (B, d) → x (B, *data_shape)."""
    return self(z, inverse=True)[0]

  def log_prob(self, x: jax.Array) -> jax.Array:
    """log p(x) (B,) in nats, prior included."""
    z, log_det = self.forward(x)
    return get_prior(self.prior).log_prob(z) + log_det

  def sample(self, key: jax.Array, num: int, temperature: float = 1.0) -> jax.Array:
    """num samples (num, *data_shape); temperature T scales the prior draw, z = T·ε."""
    dtype = jnp.result_type(float)
    z = get_prior(self.prior).sample(key, (num, self.num_dims), temperature, dtype)
    return self.inverse(z)


class NICE(Flow):
  """NICE (Dinh, Krueger & Bengio 2014): additive couplings + diagonal scaling.

  Images are flattened to (B, d). `num_couplings` additive couplings (eq. 5–6) alternate
  the odd and even entries (the official yaml's tile reordering and reversal), each with
  an MLP of `num_hidden_layers` ReLU layers of `hidden` units; then the scaling layer
  z = x·exp(D) (§3.3); a logistic prior (§3.4; "normal" is Gaussian).
  Official MNIST: 4 couplings, 5 × 1000 units, logistic prior. `logit_alpha` optionally
  puts RealNVP's logit preprocessing (elementwise) in front, its log-det in log_prob.
  """

  data_shape: tuple[int, ...]
  num_couplings: int = 4
  hidden: int = 128
  num_hidden_layers: int = 5
  prior: str = "logistic"
  logit_alpha: float | None = None

  @nn.compact
  def __call__(self, x: jax.Array, inverse: bool = False) -> tuple[jax.Array, jax.Array]:
    self._check_input(x, inverse)
    layers = [LogitTransform(self.logit_alpha, name="logit")] if self.logit_alpha else []
    layers += [Coupling("alternate", i % 2, make_transform("additive"), self.hidden,
                        self.num_hidden_layers, name=f"coupling{i}")
               for i in range(self.num_couplings)]
    layers.append(Homothety(name="scaling"))
    h = x if inverse else x.reshape(x.shape[0], -1)
    h, log_det = _run_chain(layers, h, inverse)
    return (h.reshape((-1,) + tuple(self.data_shape)) if inverse else h), log_det


class RealNVP(Flow):
  """RealNVP (Dinh, Sohl-Dickstein & Bengio 2016), multi-scale (§3.6).

  Images (B, H, W, C): the logit preprocessing (§4.1, if `logit_alpha`), then per scale
  but the last: 3 checkerboard couplings, squeeze, 3 channel couplings, factor out half
  the channels; the last scale: 4 checkerboard couplings (official
  `rec_masked_conv_coupling`). The conditioner width doubles per scale. H and W must be
  divisible by 2**(num_scales − 1).
  Vectors (B, d): `num_vector_couplings` couplings with alternating masks, MLP conditioner.

  Attributes:
    coupling: "affine_tanh" (the paper: y = x·exp(a·tanh h_s) + t) | "spline" | ...
    num_bins, spline_bound: the spline's K and B (NSF), when coupling = "spline".
    logit_alpha: α of the logit preprocessing of [−1, 1] images; None to skip.
  """

  data_shape: tuple[int, ...]
  num_scales: int = 2
  hidden: int = 32
  coupling: str = "affine_tanh"
  num_bins: int = 8
  spline_bound: float = 3.0
  logit_alpha: float | None = 0.05
  num_vector_couplings: int = 8
  num_hidden_layers: int = 2
  prior: str = "normal"

  def _transform(self):
    return make_transform(self.coupling, num_bins=self.num_bins,
                          spline_bound=self.spline_bound)

  def _scale_shapes(self) -> list[tuple[int, int, int]]:
    """The (H, W, C) each scale works on."""
    check_squeezable(type(self).__name__, (1,) + tuple(self.data_shape), self.num_scales - 1)
    height, width, channels = self.data_shape
    shapes = []
    for _ in range(self.num_scales - 1):
      shapes.append((height, width, channels))
      height, width, channels = height // 2, width // 2, 4 * channels - (4 * channels) // 2
    return shapes + [(height, width, channels)]

  @nn.compact
  def __call__(self, x: jax.Array, inverse: bool = False) -> tuple[jax.Array, jax.Array]:
    self._check_input(x, inverse)
    if len(self.data_shape) == 1:
      layers = [Coupling("alternate", i % 2, self._transform(), self.hidden,
                         self.num_hidden_layers, name=f"coupling{i}")
                for i in range(self.num_vector_couplings)]
      return _run_chain(layers, x, inverse)
    if len(self.data_shape) != 3:
      raise ValueError(f"RealNVP expects data_shape (d,) or (H, W, C), got {self.data_shape}")
    shapes = self._scale_shapes()
    preprocess = [LogitTransform(self.logit_alpha, name="logit")] if self.logit_alpha else []
    scales = []
    for s in range(self.num_scales):
      width = self.hidden * 2**s
      last = s == self.num_scales - 1
      checkerboard = [Coupling("checkerboard", i % 2, self._transform(), width,
                               name=f"scale{s}_checkerboard{i}")
                      for i in range(4 if last else 3)]
      channel = [] if last else [Coupling("channel", i % 2, self._transform(), width,
                                          name=f"scale{s}_channel{i}") for i in range(3)]
      scales.append((checkerboard, channel))
    if inverse:
      return self._inverse(x, shapes, preprocess, scales)
    h, log_det = _run_chain(preprocess, x, False)
    latents = []
    for checkerboard, channel in scales:
      h, ld = _run_chain(checkerboard, h, False)
      log_det += ld
      if channel:
        h, ld = _run_chain(channel, squeeze(h), False)
        log_det += ld
        h, latent = factor_out(h)
        latents.append(latent)
    latents.append(h.reshape(h.shape[0], -1))
    return jnp.concatenate(latents, axis=-1), log_det

  def _inverse(self, z, shapes, preprocess, scales):
    sizes = [(h // 2) * (w // 2) * ((4 * c) // 2) for h, w, c in shapes[:-1]] + [math.prod(shapes[-1])]
    offsets = [sum(sizes[:i + 1]) for i in range(len(sizes) - 1)]
    pieces = jnp.split(z, offsets, axis=-1)
    h = pieces[-1].reshape((-1,) + shapes[-1])
    log_det = jnp.zeros(z.shape[:1], z.dtype)
    for s in reversed(range(self.num_scales)):
      checkerboard, channel = scales[s]
      if channel:
        h = factor_in(h, pieces[s])
        h, ld = _run_chain(channel, h, True)
        log_det += ld
        h = unsqueeze(h)
      h, ld = _run_chain(checkerboard, h, True)
      log_det += ld
    h, ld = _run_chain(preprocess, h, True)
    return h, log_det + ld


class Glow(Flow):
  """Glow (Kingma & Dhariwal 2018, Fig. 2, Table 1): L levels of K steps of flow.

  A step is ActNorm → invertible 1×1 conv (LU if `lu`, else plain) → coupling on the
  channel halves ("affine_sigmoid": y = (x + t)·σ(h_s + 2); "additive"; "spline"), with
  Glow's conv NN and zero-initialised last conv. Images: each level squeezes, runs K
  steps, and all levels but the last factor out half the channels (split2d, here with a
  standard-normal prior). H and W must be divisible by 2**num_levels.
  Vectors (B, d): num_levels·num_steps steps, no squeeze, MLP conditioner with
  alternating masks.
  Paper CIFAR-10: L = 3, K = 32, width 512, affine. `logit_alpha` optionally puts
  RealNVP's logit preprocessing in front (the Glow paper cites it; openai/glow does not
  use it), with its log-det in log_prob.
  """

  data_shape: tuple[int, ...]
  num_levels: int = 2
  num_steps: int = 4
  hidden: int = 64
  coupling: str = "affine_sigmoid"
  lu: bool = True
  num_bins: int = 8
  spline_bound: float = 3.0
  num_hidden_layers: int = 2
  logit_alpha: float | None = None
  prior: str = "normal"

  def _step(self, name: str, index: int, vector: bool):
    transform = make_transform(self.coupling, num_bins=self.num_bins,
                               spline_bound=self.spline_bound)
    conv = (Invertible1x1ConvLU(seed=index, name=f"{name}_conv1x1") if self.lu
            else Invertible1x1Conv(name=f"{name}_conv1x1"))
    coupling = Coupling("alternate" if vector else "channel", index % 2 if vector else 0,
                        transform, self.hidden, self.num_hidden_layers,
                        name=f"{name}_coupling")
    return [ActNorm(name=f"{name}_actnorm"), conv, coupling]

  @nn.compact
  def __call__(self, x: jax.Array, inverse: bool = False) -> tuple[jax.Array, jax.Array]:
    self._check_input(x, inverse)
    if len(self.data_shape) == 1:
      layers = []
      for i in range(self.num_levels * self.num_steps):
        layers += self._step(f"step{i}", i, vector=True)
      return _run_chain(layers, x, inverse)
    if len(self.data_shape) != 3:
      raise ValueError(f"Glow expects data_shape (d,) or (H, W, C), got {self.data_shape}")
    check_squeezable("Glow", (1,) + tuple(self.data_shape), self.num_levels)
    levels = []
    for level in range(self.num_levels):
      layers = []
      for k in range(self.num_steps):
        layers += self._step(f"level{level}_step{k}", level * self.num_steps + k, False)
      levels.append(layers)
    preprocess = [LogitTransform(self.logit_alpha, name="logit")] if self.logit_alpha else []
    if inverse:
      x, log_det = self._inverse(x, levels)
      h, ld = _run_chain(preprocess, x, True)
      return h, log_det + ld
    h, log_det = _run_chain(preprocess, x, False)
    latents = []
    for level, layers in enumerate(levels):
      h, ld = _run_chain(layers, squeeze(h), False)
      log_det += ld
      if level < self.num_levels - 1:
        h, latent = factor_out(h)
        latents.append(latent)
    latents.append(h.reshape(h.shape[0], -1))
    return jnp.concatenate(latents, axis=-1), log_det

  def _level_shapes(self) -> list[tuple[int, int, int]]:
    """The (H, W, C) after each level's squeeze."""
    height, width, channels = self.data_shape
    shapes = []
    for level in range(self.num_levels):
      height, width, channels = height // 2, width // 2, 4 * channels
      shapes.append((height, width, channels))
      channels -= channels // 2
    return shapes

  def _inverse(self, z, levels):
    shapes = self._level_shapes()
    sizes = [h * w * (c // 2) for h, w, c in shapes[:-1]] + [math.prod(shapes[-1])]
    offsets = [sum(sizes[:i + 1]) for i in range(len(sizes) - 1)]
    pieces = jnp.split(z, offsets, axis=-1)
    h = pieces[-1].reshape((-1,) + shapes[-1])
    log_det = jnp.zeros(z.shape[:1], z.dtype)
    for level in reversed(range(self.num_levels)):
      if level < self.num_levels - 1:
        h = factor_in(h, pieces[level])
      h, ld = _run_chain(levels[level], h, True)
      log_det += ld
      h = unsqueeze(h)
    return h, log_det


FLOWS: dict[str, type[Flow]] = {"nice": NICE, "realnvp": RealNVP, "glow": Glow}


def get_flow(name: str, **fields) -> Flow:
  """The flow `name` ("nice" | "realnvp" | "glow") with `fields`; ValueError on bad names."""
  if name not in FLOWS:
    raise ValueError(f"Unknown flow {name!r}; valid flows: {sorted(FLOWS)}")
  cls = FLOWS[name]
  valid = sorted(f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name"))
  unknown = sorted(set(fields) - set(valid))
  if unknown:
    raise ValueError(f"Unknown fields {unknown} for flow {name!r}; valid fields: {valid}")
  return cls(**fields)

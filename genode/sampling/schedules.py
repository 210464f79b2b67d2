"""`optimize_sigmas`: a σ grid optimized for a denoiser and a solver, through the solve.

Align Your Steps (Sabour, Fidler & Kreis 2024) shows that a schedule fitted to the model,
the data and the solver beats the hand-made ones at few steps. Every genode sampler is one
differentiable `diffrax.diffeqsolve`, so the grid is fitted here end to end: Adam (optax)
on the error of the N-step solve against a tight adaptive reference solve from the same
starting noise, checked on starting noises the optimizer never saw.

Grid: `num_steps = n` means what it means for `get_sigmas(grid, n)`: n positive σ's from
σ_max to σ_min, then a final 0 (n steps, the last one the final denoise x = D(x; σ_min)),
so the NFE is that of the Karras grid with the same n (euler/dpmpp_*: n; heun: 2n − 1).

Parametrisation (every iterate is a valid grid): the n − 1 decrements of log σ are
softmax(logits)·(log σ_max − log σ_min), so the grid is strictly decreasing with the
endpoints fixed; the logits start at the log of Karras's (EDM eq. 5, ρ = 7) decrements,
i.e. at Karras exactly.

Objective: the mean squared error (over samples and dimensions) of the N-step output
against the reference, in data space after the final denoise ("mse", the default) or at
σ_min before it ("mse_at_sigma_min"), optionally of features `feature_fn(x)` of both (a
feature network for images); or ("klub") Align Your Steps' KL upper bound between the
continuous generative SDE and its discretisation on the grid (`genode.sampling.klub`),
estimated on forward-noised data examples (`data`: the training split; no reference solve,
no starting noises). Adam minimises its log (the same minimiser, better scaled).

Solvers: the deterministic fixed-grid ones (`TRACED_SOLVERS`); the solve is `sample`'s
(genode.ode's one `diffrax.diffeqsolve`, differentiated by diffrax's default
`RecursiveCheckpointAdjoint`) on a traced grid. `lms_data` computes its coefficients
from a traced grid in jnp (`genode.ode.solvers.lms_data_coefficients_traced`), so they
are differentiated too; `lms` (k-diffusion's, whose coefficients are NumPy polynomials of
a concrete grid) is not supported.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genode.sampling import klub as klub_lib
from genode.sampling.grids import append_zero, check_sigmas, karras_sigmas, loglinear_sigmas
from genode.sampling.methods import get_solver
from genode.sampling.sampler import sample

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]

OPTIMIZED_GRID = "optimized"  # the grid name of a stored optimized grid (genode.schedule_store)
TRACED_SOLVERS = ("euler", "heun", "dpmpp_2m", "dpmpp_3m", "dpmpp_3m_taylor", "lms_data")
OBJECTIVES = ("mse", "mse_at_sigma_min", "klub")
INITS = ("karras", "loglinear")


class ScheduleResult(NamedTuple):
  """An optimized grid and how it was found (objective values: mean squared errors)."""

  sigmas: np.ndarray  # (num_steps + 1,) float64: σ_max > … > σ_min, then 0
  initial_sigmas: np.ndarray  # (num_steps + 1,) the grid it started from (Karras ρ = 7)
  solver: str
  num_steps: int  # positive σ's (= steps, the last one to σ = 0)
  nfe: int  # denoiser calls of one solve on this grid
  objective: str
  train_before: float  # objective on the training noises (klub: data rows), initial grid
  train_after: float  # … on the optimized grid
  holdout_before: float  # objective on held-out noises (never seen), initial grid
  holdout_after: float  # … on the optimized grid
  num_iterations: int
  losses: np.ndarray  # (num_iterations,) training objective at each iterate
  seconds: float  # wall time of the optimization (compile included, reference excluded)
  reference_seconds: float  # wall time of the reference solves (train + holdout)


# ---------------------------------------------------------------------------
# Parametrisation: softmax increments in log σ, fixed endpoints.
# ---------------------------------------------------------------------------


def grid_from_logits(logits, sigma_min: float, sigma_max: float):
  """(n − 1,) logits → (n,) σ's: log σ_{i+1} = log σ_i − softmax(logits)_i·log(σ_max/σ_min).

  Strictly decreasing with σ_0 = σ_max and σ_{n−1} = σ_min exactly (no final 0).
  """
  logits = jnp.asarray(logits)
  span = np.log(sigma_max) - np.log(sigma_min)
  drop = span * jnp.cumsum(jax.nn.softmax(logits))[:-1]  # (n − 2,) interior points
  interior = jnp.exp(np.log(sigma_max) - drop)
  ends = jnp.ones((1,), logits.dtype)
  return jnp.concatenate([sigma_max * ends, interior, sigma_min * ends])


def logits_from_grid(sigmas) -> np.ndarray:
  """The logits (n − 1,) of a strictly decreasing positive grid (n,): log of its decrements."""
  sigmas = np.asarray(sigmas, np.float64)
  decrements = -np.diff(np.log(sigmas))
  return np.log(decrements / decrements.sum())


def _initial_grid(init, num_steps: int, sigma_min: float, sigma_max: float,
                  rho: float) -> np.ndarray:
  """(num_steps,) positive σ's of the starting grid."""
  if isinstance(init, str):
    if init == "karras":
      return karras_sigmas(num_steps, sigma_min, sigma_max, rho)
    if init == "loglinear":
      return loglinear_sigmas(num_steps, sigma_min, sigma_max)
    raise ValueError(f"Unknown init {init!r}; valid: {list(INITS)} or an explicit grid")
  grid = np.asarray(init, np.float64)
  if grid.ndim == 1 and grid.shape[0] == num_steps + 1 and grid[-1] == 0:
    grid = grid[:-1]
  check_sigmas(grid)
  if (grid.shape != (num_steps,) or not np.isclose(grid[0], sigma_max, rtol=1e-12)
      or not np.isclose(grid[-1], sigma_min, rtol=1e-12)):
    raise ValueError(f"An explicit init grid must hold num_steps={num_steps} σ's from "
                     f"sigma_max={sigma_max} to sigma_min={sigma_min} (a final 0 "
                     f"optional), got {grid}")
  return grid


# ---------------------------------------------------------------------------
# The objective.
# ---------------------------------------------------------------------------


def solve_on_grid(denoiser: Denoiser, x_t, positive, solver: str, objective: str = "mse",
                  **options):
  """The N-step output for `positive` (n,) σ's (traceable): at σ = 0 or at σ_min.

  "mse": the solve to σ_min then the final denoise D(x; σ_min), which is what
  `sample(denoiser, x_t, append_zero(positive), solver)` returns; "mse_at_sigma_min":
  the state at σ_min. x_t (B, ...) is the start at σ_max.
  """
  x = x_t
  if positive.shape[0] >= 2:
    x, _ = sample(denoiser, x_t, positive, solver, **options)
  if objective == "mse":
    x = denoiser(x, positive[-1])
  return x


def _mean_squared_error(a, b, feature_fn):
  if feature_fn is not None:
    a, b = feature_fn(a), feature_fn(b)
  return jnp.mean((a - b) ** 2)


def schedule_loss(logits, denoiser: Denoiser, x_t, target, solver: str, *, sigma_min: float,
                  sigma_max: float, objective: str = "mse", feature_fn=None, **options):
  """The objective of the grid `grid_from_logits(logits)`: MSE of the solve vs `target`.

  x_t (B, ...) starts at σ_max; target (B, ...) is the reference at σ = 0 ("mse") or at
  σ_min ("mse_at_sigma_min"). Differentiable in `logits` (through `diffrax.diffeqsolve`).
  """
  positive = grid_from_logits(logits, sigma_min, sigma_max).astype(x_t.dtype)
  out = solve_on_grid(denoiser, x_t, positive, solver, objective, **options)
  return _mean_squared_error(out, target, feature_fn)


def reference_solve(denoiser: Denoiser, x_t, *, sigma_min: float, sigma_max: float,
                    objective: str = "mse", tol: float = 1e-6, max_steps: int = 100_000,
                    reference: Callable | None = None):
  """The target of `schedule_loss`: x(σ_min) by Dopri5 at rtol = atol = tol (or
  `reference(x_t)`, e.g. a closed-form flow), then D(x; σ_min) for "mse"."""
  if reference is not None:
    x = jnp.asarray(reference(x_t), x_t.dtype)
  else:
    x, info = sample(denoiser, x_t, np.asarray([sigma_max, sigma_min]), "dopri5", rtol=tol,
                     atol=tol, max_steps=max_steps)
    if not bool(info.finite):
      raise RuntimeError(f"The reference Dopri5 solve (tol {tol:g}) failed or is not "
                         f"finite after {int(info.num_steps)} steps: raise max_steps or "
                         "check the denoiser.")
  if objective == "mse":
    x = denoiser(x, jnp.asarray(sigma_min, x_t.dtype))
  return x


# ---------------------------------------------------------------------------
# The optimizer.
# ---------------------------------------------------------------------------


def _starting_noise(noise, holdout, shape, dtype):
  """(train (B, ...), holdout (H, ...)) unit-variance noises."""
  if isinstance(noise, int) or (isinstance(noise, jax.Array)
                                and jnp.issubdtype(noise.dtype, jax.dtypes.prng_key)):
    key = jax.random.key(noise) if isinstance(noise, int) else noise
    if shape is None:
      raise ValueError("Drawing the starting noises from a key needs shape=(batch, ...).")
    num_holdout = shape[0] if holdout is None else holdout
    if not isinstance(num_holdout, int) or num_holdout < 1:
      raise ValueError("With a key, holdout is the number of held-out noises (a positive "
                       f"int), got {holdout!r}")
    train_key, holdout_key = jax.random.split(key)
    return (jax.random.normal(train_key, tuple(shape), dtype),
            jax.random.normal(holdout_key, (num_holdout,) + tuple(shape[1:]), dtype))
  train = jnp.asarray(noise, dtype)
  if holdout is None:
    raise ValueError("With explicit noises, pass holdout=<array of held-out noises> or the "
                     "number of rows of `noise` to hold out.")
  if isinstance(holdout, int):
    if not 0 < holdout < train.shape[0]:
      raise ValueError(f"holdout={holdout} rows of {train.shape[0]} noises leave none to train on")
    return train[:-holdout], train[-holdout:]
  holdout = jnp.asarray(holdout, dtype)
  if holdout.shape[1:] != train.shape[1:]:
    raise ValueError(f"Held-out noises {holdout.shape} and training noises {train.shape} "
                     "differ in shape")
  return train, holdout


def _reference_batches(denoiser, noise, holdout, shape, dtype, reference, *, sigma_min,
                       sigma_max, objective, tol):
  """((x_T, target) training, (x_T, target) held-out, seconds of the reference solves)."""
  train_noise, holdout_noise = _starting_noise(noise, holdout, shape, dtype)
  x_train, x_holdout = sigma_max * train_noise, sigma_max * holdout_noise
  start = time.perf_counter()
  if isinstance(reference, (tuple, list)):  # precomputed x(σ_min) of (train, holdout)
    if len(reference) != 2 or any(jnp.shape(r) != x.shape for r, x in
                                  zip(reference, (x_train, x_holdout))):
      raise ValueError("A precomputed reference is (x(σ_min) of the training noises, "
                       f"x(σ_min) of the held-out noises), shapes {x_train.shape} and "
                       f"{x_holdout.shape}")
    references = [lambda x, r=r: r for r in reference]
  else:
    references = [reference, reference]
  ref = dict(sigma_min=sigma_min, sigma_max=sigma_max, objective=objective, tol=tol)
  target_train = reference_solve(denoiser, x_train, reference=references[0], **ref)
  target_holdout = reference_solve(denoiser, x_holdout, reference=references[1], **ref)
  return (x_train, target_train), (x_holdout, target_holdout), time.perf_counter() - start


def _klub_batches(noise, data, holdout, dtype):
  """((x0, ε, ε′) training, (x0, ε, ε′) held-out): data rows and their KLUB draws."""
  if data is None:
    raise ValueError("objective 'klub' needs data=<(B, ...) training-split examples>: the "
                     "bound is an expectation over forward-noised data")
  if not (isinstance(noise, int) or (isinstance(noise, jax.Array)
                                     and jnp.issubdtype(noise.dtype, jax.dtypes.prng_key))):
    raise ValueError("With objective 'klub', `noise` is a PRNG key or int seed (of the "
                     "forward-noising draws), not an array of starting noises")
  key = jax.random.key(noise) if isinstance(noise, int) else noise
  train, held = _starting_noise(jnp.asarray(data, dtype), holdout, None, dtype)
  train_key, holdout_key = jax.random.split(key)
  return ((train,) + klub_lib.klub_noise(train_key, train.shape, dtype),
          (held,) + klub_lib.klub_noise(holdout_key, held.shape, dtype))


def optimize_sigmas(denoiser: Denoiser, noise, num_steps: int, solver: str = "dpmpp_2m", *,
                    sigma_min: float, sigma_max: float, shape=None, holdout=None,
                    reference: Callable | tuple | None = None, reference_tol: float = 1e-6,
                    objective: str = "mse", feature_fn: Callable | None = None,
                    num_iterations: int = 200, learning_rate: float = 0.05,
                    batch_size: int | None = None, seed: int = 0, init="karras",
                    rho: float = 7.0, dtype=None, data=None, klub_nodes: int = 4,
                    **options) -> ScheduleResult:
  """Fits the σ grid of an n-step solve to a tight reference solve (AYS-style, by gradients).

  Args:
    denoiser: D(x; σ), JAX-traceable; x (B, ...), σ a scalar.
    noise: the starting noises, unit variance (x_T = σ_max·noise): an array (B, ...), or
      a PRNG key / int seed from which `shape` training and `holdout` held-out noises are
      drawn (independent keys). With objective "klub": the key / seed of the
      forward-noising draws of `data` (training and held-out rows: independent keys).
    num_steps: n, as in `get_sigmas(grid, n)`: n positive σ's, then a final 0.
    solver: one of `TRACED_SOLVERS`.
    sigma_min, sigma_max: the fixed endpoints of the positive σ's.
    shape: (B, ...) of the training noises, when `noise` is a key.
    holdout: held-out noises: an array (H, ...); with an array `noise`, an int k holds out
      its last k rows; with a key, their number (default B). With "klub": held-out data
      rows (an array, or an int k: the last k rows of `data`).
    reference: x_T (B, ...) → the exact x(σ_min) (e.g. a closed-form flow), or the
      precomputed pair (x(σ_min) of the training noises, … of the held-out ones); default
      the Dopri5 solve at rtol = atol = `reference_tol`. Computed once, before iterating.
    objective: one of `OBJECTIVES` (see the module docstring).
    feature_fn: compares feature_fn(x) (B, ...) → (B, F) instead of x.
    num_iterations: Adam steps (learning rate cosine-decayed from `learning_rate` to 0).
    batch_size: training noises per step (drawn from fold_in(key(seed), i)); default all.
    seed: seeds the minibatches. The result is a function of the arguments.
    init: "karras" (EDM eq. 5 with `rho`), "loglinear", or an explicit (n,)/(n + 1,) grid.
    dtype: of the noises and the solve (default: JAX's default float).
    data: objective "klub" only: data examples (B, ...) from the TRAINING split (never the
      test split: the fitted grid is evaluated there).
    klub_nodes: Gauss–Legendre nodes per interval of the KLUB's time integral.
    **options: the solver's options (not used by "klub", which runs no solve).

  Returns:
    A `ScheduleResult`; its `sigmas` (n + 1,) are the iterate with the lowest training
    objective. Raises ValueError if a gradient is not finite (naming the iteration).
  """
  if solver not in TRACED_SOLVERS:
    hint = (" (`lms` computes its coefficients from a concrete grid in NumPy: it cannot "
            "be differentiated through; `lms_data` can)" if solver == "lms" else "")
    raise ValueError(f"optimize_sigmas does not support solver {solver!r}{hint}; valid "
                     f"solvers: {list(TRACED_SOLVERS)}")
  if objective not in OBJECTIVES:
    raise ValueError(f"Unknown objective {objective!r}; valid objectives: {list(OBJECTIVES)}")
  if int(num_steps) != num_steps or num_steps < 2:
    raise ValueError(f"num_steps must be an integer ≥ 2 (σ_max and σ_min), got {num_steps!r}")
  if int(num_iterations) != num_iterations or num_iterations < 0:
    raise ValueError(f"num_iterations must be a non-negative integer, got {num_iterations!r}")
  dtype = jnp.dtype(dtype or jnp.result_type(float))
  initial = _initial_grid(init, num_steps, sigma_min, sigma_max, rho)
  if data is not None and objective != "klub":
    raise ValueError(f"data= (training-split examples) is for objective 'klub' only, not "
                     f"{objective!r}")
  if objective == "klub":
    if feature_fn is not None or reference is not None:
      raise ValueError("objective 'klub' compares no solve with a reference: it takes no "
                       "feature_fn or reference")
    klub_lib.gauss_legendre_01(klub_nodes)  # checks klub_nodes
    train_batch, holdout_batch = _klub_batches(noise, data, holdout, dtype)
    reference_seconds = 0.0

    def batch_loss(logits, batch):
      positive = grid_from_logits(logits, sigma_min, sigma_max).astype(dtype)
      return klub_lib.klub(denoiser, positive, *batch, num_nodes=klub_nodes)
  else:
    train_batch, holdout_batch, reference_seconds = _reference_batches(
        denoiser, noise, holdout, shape, dtype, reference, sigma_min=sigma_min,
        sigma_max=sigma_max, objective=objective, tol=reference_tol)
    loss_kwargs = dict(sigma_min=sigma_min, sigma_max=sigma_max, objective=objective,
                       feature_fn=feature_fn, **options)

    def batch_loss(logits, batch):
      return schedule_loss(logits, denoiser, *batch, solver, **loss_kwargs)

  start = time.perf_counter()

  def log_loss(logits, batch):
    loss = batch_loss(logits, batch)
    return jnp.log(loss), loss

  optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, max(num_iterations, 1)))

  @jax.jit
  def step(logits, opt_state, batch):
    (_, loss), grad = jax.value_and_grad(log_loss, has_aux=True)(logits, batch)
    updates, opt_state = optimizer.update(grad, opt_state, logits)
    finite = jnp.all(jnp.isfinite(grad)) & jnp.isfinite(loss)
    return optax.apply_updates(logits, updates), opt_state, loss, finite

  evaluate = jax.jit(lambda logits, batch: log_loss(logits, batch)[1])
  logits = jnp.asarray(logits_from_grid(initial), dtype)
  opt_state = optimizer.init(logits)
  batch_key = jax.random.key(seed)
  best, best_loss, losses = logits, np.inf, []
  num_train = train_batch[0].shape[0]
  for i in range(num_iterations):
    batch = train_batch
    if batch_size is not None and batch_size < num_train:
      idx = jax.random.choice(jax.random.fold_in(batch_key, i), num_train, (batch_size,),
                              replace=False)
      batch = tuple(b[idx] for b in train_batch)
    new_logits, opt_state, loss, finite = step(logits, opt_state, batch)
    loss = float(loss)
    if not bool(finite):
      raise ValueError(f"optimize_sigmas: non-finite gradient or objective ({loss}) at "
                       f"iteration {i} of {num_iterations} (grid "
                       f"{np.asarray(grid_from_logits(logits, sigma_min, sigma_max))}); "
                       "check the denoiser at these σ's or lower the learning rate.")
    losses.append(loss)
    if batch_size is None and loss < best_loss:
      best, best_loss = logits, loss
    logits = new_logits
  if batch_size is not None or num_iterations == 0:
    best = logits  # minibatch losses are noisy: keep the last iterate
  else:
    last = float(evaluate(logits, train_batch))
    if last < best_loss:
      best = logits
  seconds = time.perf_counter() - start

  sigmas = append_zero(np.asarray(grid_from_logits(best, sigma_min, sigma_max), np.float64))
  sigmas[0], sigmas[-2] = sigma_max, sigma_min
  check_sigmas(sigmas)
  init_logits = jnp.asarray(logits_from_grid(initial), dtype)
  return ScheduleResult(
      sigmas=sigmas, initial_sigmas=append_zero(initial), solver=solver, num_steps=num_steps,
      nfe=get_solver(solver).nfe_per_step * (num_steps - 1) + 1,  # + the final step
      objective=objective,
      train_before=float(evaluate(init_logits, train_batch)),
      train_after=float(evaluate(best, train_batch)),
      holdout_before=float(evaluate(init_logits, holdout_batch)),
      holdout_after=float(evaluate(best, holdout_batch)),
      num_iterations=num_iterations, losses=np.asarray(losses), seconds=seconds,
      reference_seconds=reference_seconds)

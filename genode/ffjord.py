"""The continuous-normalizing-flow family (FFJORD, Grathwohl et al. 2019): family "cnf".

A vector field f(x, t) (a genode network with t as its noise label, e.g. FFJORD's
concatsquash MLP, `genode.models.concatsquash`) defines dx/dt = f(x, t) on [0, T] from
the data at t = 0 to the prior N(0, I) at t = T. Its density is the instantaneous change
of variables (FFJORD eq. 4), solved by the ODE backend (`genode.ode.cnf_log_likelihood`):

    log p(x) = log N(x(T); 0, I) + ∫_0^T ∇·f(x(t), t) dt.

Training maximises it on the training batch (`objective`); sampling solves the same ODE
backwards from z ~ N(0, I) at t = T to t = 0 (`sample`).

Choices, and why:

* **Trace.** Training uses Hutchinson's estimator εᵀ(∂f/∂x)ε with one Rademacher probe
  per sample, drawn once per solve (FFJORD §2.2; the repository's default
  `--rademacher=True`): one JVP per evaluation instead of d, and an unbiased estimate
  of the log-likelihood, hence of its gradient (tests/test_ffjord.py checks the
  unbiasedness in float64). Evaluation uses the exact trace (d JVPs) where d is small
  (`launch.evaluate`'s nll.trace="auto": exact up to 64 dimensions: toy2d and 8×8 digits).
* **Adjoint and steps.** Training integrates in a fixed number of equal steps
  (`cnf.train.num_steps`; toy2d: 8 Tsit5 steps, 49 evaluations of f) and backpropagates
  through the solver's operations with diffrax's `RecursiveCheckpointAdjoint`
  ("discretize-then-optimize", Onken & Ruthotto 2020): the exact gradient of the loss
  that is computed, memory of num_steps checkpoints (tiny here), one backward pass. The
  continuous adjoint ("backsolve", FFJORD's and Neural ODE's choice) re-solves the state
  backwards, so its gradient carries that solve's error: with 4 fixed Tsit5 steps on a
  toy2d model after 4000 steps it was 3.6× the gradient's norm away from the exact one
  and training diverged (WORKSPACE). Backsolve is right only with an accurate (adaptive)
  solve. The trap: on this stack (jax 0.10.2, equinox 0.13.8, diffrax 0.7.2) the
  checkpointed adjoint's backward pass fails inside a data-parallel train step, shard_map
  and pmap alike ("Closure-converted function called with different dynamic arguments":
  equinox's checkpointed while loop compares the sharding metadata of its carry; diffrax
  issue #765, unfixed upstream). So the cnf configs train on one device
  (parallel="single", the 2-core CPU has one anyway); multi-device runs need
  adjoint="backsolve" (with more steps), or "direct" (exact, but 9× the cost per step
  here). The config layer refuses the failing combination in one line. With an adaptive
  training solve (num_steps None) the cost of backpropagating grows with `max_steps`
  (diffrax issue #76): keep `cnf.train.max_steps` tight. Evaluation and sampling solve
  adaptively (Dopri5, rtol = atol = 1e-5 by default), so the reported likelihood is the
  continuous model's, not the training discretization's.
* **Preprocessing.** The density is of x in genode's data space: 2-D toy data as they
  are (nats), images scaled to [−1, 1] and, with `num_levels` = 256, uniformly
  dequantized in training, x = 2(k + u)/256 − 1 (`genode.bits.dequantize`), exactly as
  `launch.evaluate` dequantizes the test split. The scaling's Jacobian d·ln(2/256) is
  added by `genode.bits.bits_per_dim`, so training's bits_per_dim metric, the evaluation's
  NLL and the PF-ODE NLL of a diffusion model are in one convention.
* **Whitening** (`whitening` = "full" | "diagonal", default "none"): an affine bijector
  z = L⁻¹(x − μ) before the flow, μ and Σ = L Lᵀ the mean and covariance of the
  dequantized training examples (`genode.whitening`; the data's `training_examples()`:
  never the validation or test split), so log p(x) = log p_CNF(z) − Σᵢ log Lᵢᵢ and, with
  the zero-initialized output layer, training starts from the fitted Gaussian and learns
  the residual (digits: the fitted Gaussian is 6.47 test bits/dim).
  The statistics are computed once by `init_params` and kept in the parameters
  (params = {"field", "whitening"}), so checkpoints carry them and a restore never refits
  them; the objective stops their gradient, so Adam never moves them (their EMA,
  β·θ + (1 − β)·θ, stays within float32 rounding of θ: genode's EMA update is kept
  bit-identical for every run rather than special-cased for constants).

The family interface is `genode.families`'; sampler settings are the eval config's
Runge–Kutta solvers (fixed steps uniform in t) and adaptive solvers × tolerances.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from genode import bits
from genode import sampling
from genode import whitening as whitening_lib
from genode.diffusion import Overrides, params_collection
from genode.losses import Objective
from genode.ode import adaptive
from genode.ode import cnf as cnf_lib
from genode.ode import fixed
from genode.ode import methods


@dataclasses.dataclass(frozen=True)
class Solve:
  """How one CNF solve runs: the trace, the solver, fixed steps or tolerances, the adjoint.

  trace: "exact" | "hutchinson"; probe: "rademacher" | "gaussian"; num_probes: per sample;
  solver: a name in `genode.ode.RUNGE_KUTTA` (adaptive ones when num_steps is None);
  num_steps: fixed equal steps, or None = adaptive with rtol/atol and max_steps;
  adjoint: a name in `genode.ode.ADJOINTS`.
  """

  trace: str = "exact"
  probe: str = "rademacher"
  num_probes: int = 1
  solver: str = "dopri5"
  num_steps: int | None = None
  rtol: float = 1e-5
  atol: float = 1e-5
  max_steps: int = 4096
  adjoint: str = "recursive_checkpoint"

  def __post_init__(self):
    check_solver(self.solver, self.num_steps, "cnf solve")
    methods.lookup(methods.ADJOINTS, self.adjoint, "adjoint")
    if self.trace not in cnf_lib.TRACES:
      raise ValueError(f"Unknown trace {self.trace!r}; valid: {list(cnf_lib.TRACES)}")
    if self.probe not in cnf_lib.PROBES:
      raise ValueError(f"Unknown probe {self.probe!r}; valid: {list(cnf_lib.PROBES)}")
    if int(self.num_probes) < 1:
      raise ValueError(f"num_probes must be ≥ 1, got {self.num_probes}")
    if int(self.max_steps) < 1:
      raise ValueError(f"max_steps must be ≥ 1, got {self.max_steps}")


def from_fields(cls, fields: dict, section: str):
  """cls(**fields) for a config section; ValueError naming the valid fields otherwise."""
  valid = sorted(f.name for f in dataclasses.fields(cls))
  unknown = sorted(set(fields) - set(valid))
  if unknown:
    raise ValueError(f"Unknown fields {unknown} in config.{section}; valid: {valid}")
  return cls(**fields)


def check_solver(solver: str, num_steps: int | None, what: str) -> None:
  """ValueError (one line, listing the valid names) for a solver the CNF cannot run."""
  if num_steps is None:
    valid = sorted(n for n, m in methods.RUNGE_KUTTA.items() if m.adaptive)
    if solver not in valid:
      raise ValueError(f"Unknown adaptive solver {solver!r} for the {what}; valid: {valid} "
                       f"(or set steps for a fixed-step one of {sorted(methods.RUNGE_KUTTA)})")
    return
  if solver not in methods.RUNGE_KUTTA:
    raise ValueError(f"Unknown solver {solver!r} for the {what}; valid: "
                     f"{sorted(methods.RUNGE_KUTTA)}")
  if int(num_steps) != num_steps or num_steps < 1:
    raise ValueError(f"The {what}'s steps must be a positive integer, got {num_steps!r}")


@dataclasses.dataclass(frozen=True)
class CNFSampler:
  """How the family samples by default (`config.sampler`): `solver` adaptively at
  rtol/atol (steps None) or in `steps` equal steps; `num_samples` for training grids."""

  solver: str = "dopri5"
  steps: int | None = None
  rtol: float = 1e-5
  atol: float = 1e-5
  max_steps: int = 4096
  num_samples: int = 64

  def __post_init__(self):
    check_solver(self.solver, self.steps, "sampler")


@dataclasses.dataclass(frozen=True)
class CNFSetting:
  """One evaluated sampler: a Runge–Kutta solver in `steps` equal steps, or an adaptive
  one at `tol` (rtol = atol = tol)."""

  solver: str
  steps: int | None = None
  tol: float | None = None

  @property
  def name(self) -> str:
    if self.tol is not None:
      return f"{self.solver}_tol{self.tol:g}"
    return f"{self.solver}_uniform{self.steps}"

  def describe(self) -> dict:
    return dict(solver=self.solver, grid=None if self.tol is not None else "uniform_t",
                steps=self.steps, tol=self.tol)


class SampleInfo(NamedTuple):
  """What one sampling solve cost (per batch = per sample: the batch shares its steps)."""

  nfe: jax.Array  # () evaluations of f
  num_steps: jax.Array  # () steps, accepted + rejected
  finite: jax.Array  # bool: every sample finite and the solve finished (max_steps)


@dataclasses.dataclass(frozen=True, eq=False)
class CNF:
  """A continuous normalizing flow dx/dt = `model`(x, t) on [0, time_length]."""

  model: Any  # a flax.linen.Module with genode.models' call signature (t as noise label)
  data_shape: tuple[int, ...]
  time_length: float = 1.0
  num_levels: int = 0  # 256: dequantize 8-bit data in training (0: continuous data)
  train_solve: Solve = Solve(trace="hutchinson", solver="tsit5", num_steps=8)
  likelihood_solve: Solve = Solve()  # evaluation: its trace/tolerances are overridden
  sampler: CNFSampler = CNFSampler()
  num_classes: int = 0
  # RNODE (Finlay et al. 2020, eq. 5): training adds λ_K ∫‖f‖² dt + λ_J ∫‖∇f‖_F² dt to
  # −log p(x) (per sample, before the division by d); 0 = plain FFJORD.
  kinetic_weight: float = 0.0
  jacobian_weight: float = 0.0
  # A data-fitted affine bijector before the flow (`genode.whitening`): "full" (Cholesky of
  # the training data's covariance) | "diagonal" | "none". The CNF models z = L⁻¹(x − μ);
  # with f = 0 the model is the fitted Gaussian N(μ, Σ).
  whitening: str = "none"

  name = "cnf"

  def __post_init__(self):
    if not self.time_length > 0:
      raise ValueError(f"cnf.time_length must be > 0, got {self.time_length}")
    if self.num_classes:
      raise ValueError("The cnf family is unconditional: model.num_classes must be 0")
    if self.num_levels < 0 or self.num_levels == 1:
      raise ValueError(f"cnf.num_levels must be 0 (continuous data) or ≥ 2 (e.g. 256), got "
                       f"{self.num_levels}")
    for field in ("kinetic_weight", "jacobian_weight"):
      if not getattr(self, field) >= 0:
        raise ValueError(f"cnf.{field} must be ≥ 0, got {getattr(self, field)}")
    whitening_lib.check_kind(self.whitening)

  @property
  def whitened(self) -> bool:
    return self.whitening != "none"

  @property
  def init_data(self) -> str:
    """What `init_params` needs as its batch (read by `genode.experiment`): "training_split"
    (every example training draws from: the whitening's statistics) or "batch" (a step-0
    batch; only its shape is used)."""
    return "training_split" if self.whitened else "batch"

  def field_params(self, params):
    """The vector field's parameters (params["field"] when whitened, else params)."""
    return params["field"] if self.whitened else params

  # -- the vector field -------------------------------------------------------
  def drift(self, params) -> Callable:
    """f(x, t), t a () array: a pytree holding the field's `params` (for every adjoint);
    with whitening, f acts on the whitened variable z."""
    return Partial(functools.partial(_drift, self.model), self.field_params(params))

  @property
  def num_dims(self) -> int:
    return math.prod(self.data_shape)

  # -- training ---------------------------------------------------------------
  def init_params(self, key: jax.Array, batch: dict) -> Any:
    """The network's parameters for `key` (the last layer is zero-initialized: f = 0, the
    identity flow). Without whitening only the shape of batch["x"] is used; with it,
    batch["x"] is the training split (`init_data`) and the parameters are {"field": the
    network's, "whitening": {"mean", "scale_tril"} fitted to it (`genode.whitening.fit`)},
    so that a checkpoint stores the statistics and a restore never refits them. Training
    never changes them (`objective` stops their gradient)."""
    x = jnp.zeros((1,) + tuple(self.data_shape), jnp.float32)
    field = params_collection(self.model.init(key, x, jnp.zeros((1,), jnp.float32)))
    if not self.whitened:
      return field
    return {"field": field, "whitening": whitening_lib.fit(
        jnp.asarray(batch["x"]), self.whitening, num_levels=self.num_levels)}

  def preprocess(self, x: jax.Array, key: jax.Array) -> jax.Array:
    """Training data as the density's variable: 8-bit images (x = k/127.5 − 1 from the
    dataset) dequantized to 2(k + u)/256 − 1; continuous data unchanged."""
    if not self.num_levels:
      return x
    levels = jnp.round((x + 1.0) * ((self.num_levels - 1) / 2.0)).astype(jnp.int32)
    return bits.dequantize(key, levels, num_levels=self.num_levels).astype(x.dtype)

  @property
  def regularized(self) -> bool:
    return self.kinetic_weight > 0 or self.jacobian_weight > 0

  def objective(self) -> Objective:
    """Maximum likelihood: per-sample loss −log p(x)/d (nats per dimension) of the
    preprocessed batch, through `train_solve` (Hutchinson trace, fixed steps,
    checkpointed adjoint by default); with RNODE weights, (−log p(x) + λ_K ∫‖f‖² dt +
    λ_J ∫‖∇f‖_F² dt)/d, the Frobenius norm estimated by the trace's own probes. Metrics:
    nll_nats, bits_per_dim (quantized data), nfe, and with RNODE kinetic and
    jacobian_frobenius (batch means of the two integrals). The key splits into
    (dequantization, probe) keys."""
    solve, dim = self.train_solve, self.num_dims

    def objective(params, batch, key):
      if self.whitened:  # fitted statistics, not trained: zero gradient, zero Adam update
        params = dict(params, whitening=jax.lax.stop_gradient(params["whitening"]))
      dq_key, probe_key = jax.random.split(key)
      x = self.preprocess(batch["x"], dq_key)
      logp, info = self.solve_log_likelihood(params, x, probe_key, solve,
                                             regularize=self.regularized)
      metrics = {"nll_nats": -jnp.mean(logp), "nfe": info.nfe.astype(jnp.float32)}
      if self.num_levels:
        metrics["bits_per_dim"] = jnp.mean(bits.bits_per_dim(
            logp, dim, data_scale=2.0, num_levels=self.num_levels))
      loss = -logp
      if self.regularized:
        metrics["kinetic"] = jnp.mean(info.kinetic)
        metrics["jacobian_frobenius"] = jnp.mean(info.jacobian_frobenius)
        loss = (loss + self.kinetic_weight * info.kinetic
                + self.jacobian_weight * info.jacobian_frobenius)
      return loss / dim, metrics

    return objective

  def solve_log_likelihood(self, params, x: jax.Array, key: jax.Array | None, solve: Solve,
                           regularize: bool = False):
    """log p(x) (B,) and `genode.ode.CNFInfo` with the solve settings `solve` (and RNODE's
    two integrals in it with `regularize`). With whitening, log p(x) = log p_CNF(z) +
    log|det ∂z/∂x| for z = L⁻¹(x − μ) (`genode.whitening`)."""
    if tuple(x.shape[1:]) != tuple(self.data_shape):
      raise ValueError(f"cnf log_likelihood: x has shape {x.shape}, expected (B, "
                       f"{', '.join(map(str, self.data_shape))})")
    log_det = 0.0
    if self.whitened:
      x, log_det = whitening_lib.whiten(params["whitening"], x)
    logp, info = cnf_lib.cnf_log_likelihood(
        self.drift(params), x, 0.0, self.time_length,
        lambda z: cnf_lib.gaussian_log_prob(z, 1.0), trace=solve.trace,
        key=key if solve.trace == "hutchinson" else None, num_probes=int(solve.num_probes),
        probe=solve.probe, rtol=solve.rtol, atol=solve.atol, solver=solve.solver,
        max_steps=int(solve.max_steps),
        num_steps=None if solve.num_steps is None else int(solve.num_steps),
        adjoint=solve.adjoint, regularize=regularize)
    return logp + log_det, info

  # -- sampling ---------------------------------------------------------------
  def sample(self, params, key: jax.Array, num: int, *, solver: str | None = None,
             steps: int | None = None, rtol: float | None = None, atol: float | None = None,
             class_labels: jax.Array | None = None):
    """`num` samples (num, *data_shape) and a `SampleInfo`: z ~ N(0, I) from `key`, then
    dx/dt = f backwards from t = T to 0. Unset arguments come from the sampler spec
    (`steps` given: that many equal steps; else adaptive at rtol/atol)."""
    if class_labels is not None:
      raise ValueError("The cnf family is unconditional: no class_labels")
    spec = self.sampler
    if solver is None:
      solver, steps = spec.solver, spec.steps if steps is None else steps
    check_solver(solver, steps, "sampler")
    z = jax.random.normal(key, (num,) + tuple(self.data_shape), jnp.float32)
    field = Partial(functools.partial(_vector_field, self.model), self.field_params(params))
    if steps is None:
      x, counts = adaptive.solve_adaptive(
          field, z, self.time_length, 0.0, solver=solver,
          rtol=spec.rtol if rtol is None else rtol, atol=spec.atol if atol is None else atol,
          max_steps=spec.max_steps)
    else:
      x, counts = fixed.solve_constant_steps(field, z, self.time_length, 0.0,
                                             num_steps=int(steps), solver=solver)
    if self.whitened:
      x = whitening_lib.unwhiten(params["whitening"], x)
    finite = jnp.all(jnp.isfinite(x)) & counts.successful
    return x, SampleInfo(counts.nfe, counts.num_steps, finite)

  def make_sampler(self, num: int, **kwargs) -> Callable:
    """`jit`-compiled `(params, key, class_labels=None) -> (samples, info)` with the given
    `sample` arguments (solver, steps, rtol, atol)."""
    return jax.jit(lambda params, key, class_labels=None: self.sample(
        params, key, num, class_labels=class_labels, **kwargs))

  def sampler_overrides(self, *, solver: str | None = None, grid: str | None = None,
                        steps: int | None = None, sigmas=None,
                        guidance_scale: float | None = None, **options) -> Overrides:
    """Checks launch.sample's overrides: solver (a Runge–Kutta name), steps (fixed equal
    steps; none = adaptive), rtol/atol. A σ grid or guidance → ValueError (a CNF has
    neither)."""
    for flag, value in (("grid", grid), ("sigmas", sigmas), ("guidance_scale", guidance_scale)):
      if value is not None:
        raise ValueError(f"The cnf family has no {flag}: it integrates dx/dt over t ∈ [0, "
                         f"{self.time_length:g}] (use --solver and --steps)")
    unknown = sorted(set(options) - {"rtol", "atol"})
    if unknown:
      raise ValueError(f"Unknown sampler options {unknown} for the cnf family; valid: "
                       "['atol', 'rtol']")
    spec = self.sampler
    solver = solver or spec.solver
    steps = steps if steps is not None else (spec.steps if solver == spec.solver else None)
    check_solver(solver, steps, "sampler")
    kwargs = dict(solver=solver, steps=steps)
    if steps is None:
      kwargs.update(rtol=float(options.get("rtol", spec.rtol)),
                    atol=float(options.get("atol", spec.atol)))
      label = f"{solver}_tol{kwargs['rtol']:g}"
    else:
      label = f"{solver}_uniform{steps}"
    record = dict(solver=solver, grid=None if steps is None else "uniform_t", steps=steps,
                  options={k: v for k, v in kwargs.items() if k in ("rtol", "atol")})
    return Overrides(kwargs=kwargs, label=label, record=record)

  def grid_labels(self, num: int) -> None:
    """None: the family is unconditional."""
    del num
    return None

  # -- evaluation -------------------------------------------------------------
  def sampler_settings(self, eval_config) -> list[CNFSetting]:
    """eval.solvers that are Runge–Kutta methods × eval.steps (equal steps in t), then
    eval.adaptive_solvers × eval.tolerances. The diffusion-only samplers of eval.solvers
    (σ-grid multistep/exponential ones) are skipped, saying so; eval.grid is unused."""
    fixed_names, skipped = [], []
    for solver in eval_config.solvers:
      if solver in methods.RUNGE_KUTTA:
        fixed_names.append(solver)
      elif solver in sampling.SOLVERS:
        skipped.append(solver)
      else:
        raise ValueError(f"Unknown solver {solver!r} in eval.solvers; valid for the cnf "
                         f"family: {sorted(methods.RUNGE_KUTTA)}")
    if skipped:
      logging.warning("cnf family: skipping the diffusion-only samplers %s of eval.solvers "
                      "(a CNF solves dx/dt = f(x, t) with Runge–Kutta methods %s)", skipped,
                      sorted(methods.RUNGE_KUTTA))
    adaptive_names = sorted(n for n, m in methods.RUNGE_KUTTA.items() if m.adaptive)
    for solver in eval_config.adaptive_solvers:
      if solver not in adaptive_names:
        raise ValueError(f"Unknown solver {solver!r} in eval.adaptive_solvers; valid: "
                         f"{adaptive_names}")
    if any(int(n) < 1 for n in eval_config.steps):
      raise ValueError(f"eval.steps must be >= 1, got {eval_config.steps}")
    return ([CNFSetting(s, steps=int(n)) for s in fixed_names for n in eval_config.steps]
            + [CNFSetting(s, tol=float(t)) for s in eval_config.adaptive_solvers
               for t in eval_config.tolerances])

  def setting_sampler(self, setting: CNFSetting, num: int) -> tuple[Callable, dict]:
    """(jitted `(params, key, labels) -> (x, info)` for `setting`, its record)."""
    options = {} if setting.tol is None else {"rtol": setting.tol, "atol": setting.tol}
    fn = jax.jit(lambda p, key, labels: self.sample(
        p, key, num, solver=setting.solver, steps=setting.steps, class_labels=labels,
        **options))
    return fn, dict(time_length=float(self.time_length))

  def log_likelihood(self, params, x: jax.Array, key: jax.Array, *,
                     class_labels: jax.Array | None = None, trace: str = "exact",
                     num_probes: int = 1, rtol: float | None = None,
                     atol: float | None = None):
    """log p(x) (B,) in nats of x in data space (images: [−1, 1], dequantized by the
    caller) and its `genode.ode.CNFInfo` (nfe, stderr, …): the adaptive
    `likelihood_solve` with the given trace and tolerances."""
    if class_labels is not None:
      raise ValueError("The cnf family is unconditional: no class_labels")
    base = self.likelihood_solve
    solve = dataclasses.replace(base, trace=trace, num_probes=int(num_probes),
                                rtol=base.rtol if rtol is None else float(rtol),
                                atol=base.atol if atol is None else float(atol))
    return self.solve_log_likelihood(params, x, key, solve)

  def likelihood_record(self) -> dict:
    """What `log_likelihood` integrates, for the evaluation's record."""
    solve = self.likelihood_solve
    return dict(t0=0.0, t1=float(self.time_length), prior="N(0, I)", solver=solve.solver,
                max_steps=int(solve.max_steps), whitening=self.whitening)

  def describe(self) -> str:
    s = self.train_solve
    steps = f"{s.num_steps} steps" if s.num_steps is not None else f"adaptive ≤{s.max_steps}"
    rnode = (f", RNODE λ_K={self.kinetic_weight:g} λ_J={self.jacobian_weight:g}"
             if self.regularized else "")
    if self.whitened:
      rnode += f", {self.whitening} whitening fitted to the training split"
    return (f"CNF {type(self.model).__name__} (T={self.time_length:g}; training: {s.trace} "
            f"trace, {s.solver} {steps}, {s.adjoint} adjoint{rnode})")


def _drift(model, params, x, t):
  """f(x, t) of the network: t () broadcast to the batch's noise labels."""
  return model.apply({"params": params}, x, jnp.broadcast_to(t, x.shape[:1]).astype(x.dtype))


def _vector_field(model, params, t, x, args):
  """diffrax's (t, y, args) signature of f."""
  del args
  return _drift(model, params, x, jnp.asarray(t, x.dtype))

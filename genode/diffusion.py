"""The diffusion model family: every formulation's network, as a denoiser D(x; σ).

`Diffusion(formulation, model, data_shape, num_classes, sampler)` owns what is particular
to diffusion models (VP, VE, EDM, rectified flow, DDPM: one `Formulation` each):

* `init_params(key, batch)`: the network's parameters (the values of the batch are not
  used, only its shape);
* `objective()`: the denoising loss (EDM eq. 8) of the preconditioned network (eq. 7);
* `denoiser(params, …)`: D(x; σ), with classifier-free guidance;
* `sample(params, key, num, …)`: the probability-flow ODE through `genode.sampling`;
* `log_likelihood(params, x, key, …)`: the PF-ODE density (`genode.likelihood`);
* `sampler_settings(eval_config)`: the evaluation's sampler settings (solvers × steps,
  adaptive solvers × tolerances), each drawn with `setting_sampler`.

The training loop, the evaluation and the launchers call these methods only (see
`genode.families` for the other families and the table that resolves them).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genode import likelihood as likelihood_lib
from genode import sampling
from genode.denoiser import Denoiser, precondition
from genode.formulations import Formulation
from genode.losses import Objective, denoising_objective
from genode.reflow import feature_loss
from genode.reflow import objectives as reflow_objectives
from genode.reflow.rf_time import UShapedTimeSigma, UniformTimeSigma, check_u_shape
from genode.sampling.schedules import OPTIMIZED_GRID

COORDINATES = ("sigma", "native")


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
  """How the family samples by default (`config.sampler`).

  solver: a name in `genode.sampling.SOLVERS`; options: its options (e.g. S_churn, rtol);
  grid, steps: a named σ grid (`genode.sampling.GRIDS`) with `steps` steps, or `sigmas`:
  an explicit strictly decreasing σ list (a final 0 = a last denoising step), which then
  takes precedence; grid "optimized": the workdir's stored grid for (solver, steps)
  (`genode.schedule_store`, resolved by `genode.workdir.sample_workdir`);
  sigma_min/sigma_max: None = the formulation's; coordinates: "sigma"
  (dx/dσ, s = 1) or "native" (the formulation's own ODE in its time t, EDM eq. 4).
  """

  solver: str = "heun"
  grid: str = "karras"
  steps: int = 18
  sigma_min: float | None = None
  sigma_max: float | None = None
  sigmas: tuple[float, ...] | None = None
  options: tuple[tuple[str, Any], ...] = ()
  coordinates: str = "sigma"
  num_samples: int = 64
  guidance_scale: float = 1.0

  @classmethod
  def from_config(cls, sampler) -> "SamplerSpec":
    """From a `config.sampler` section (unknown solver/grid/coordinates → ValueError)."""
    values = {f.name: sampler.get(f.name, f.default) for f in dataclasses.fields(cls)}
    options = values["options"]
    values["options"] = tuple(sorted(dict(options or {}).items()))
    values["sigmas"] = tuple(float(s) for s in values["sigmas"]) if values["sigmas"] else None
    spec = cls(**values)
    solver = sampling.get_solver(spec.solver)
    solver.parse_options(dict(spec.options))  # unknown option names → ValueError
    if spec.coordinates == "native" and not solver.accepts_formulation:
      raise ValueError(f"Solver {spec.solver!r} is defined in σ only; "
                       "sampler.coordinates='native' needs one that integrates a "
                       "formulation's own ODE")
    if spec.grid not in sampling.GRIDS and spec.grid != OPTIMIZED_GRID:
      raise ValueError(f"Unknown grid {spec.grid!r}; valid grids: "
                       f"{list(sampling.GRIDS) + [OPTIMIZED_GRID]}")
    if spec.coordinates not in COORDINATES:
      raise ValueError(f"Unknown sampler.coordinates {spec.coordinates!r}; valid: "
                       f"{list(COORDINATES)}")
    return spec


@dataclasses.dataclass(frozen=True)
class SamplerSetting:
  """One evaluated sampler: a fixed-grid solver with `steps` on `grid`, or an adaptive one
  at `tol` (rtol = atol = tol)."""

  solver: str
  grid: str = "karras"
  steps: int = 18
  tol: float | None = None
  sigmas: tuple[float, ...] | None = None  # grid "optimized": the stored σ's (workdir's)

  @property
  def name(self) -> str:
    if self.tol is not None:
      return f"{self.solver}_tol{self.tol:g}"
    return f"{self.solver}_{self.grid}{self.steps}"

  @property
  def options(self) -> dict:
    return {} if self.tol is None else {"rtol": self.tol, "atol": self.tol}

  def describe(self) -> dict:
    record = dict(solver=self.solver, grid=None if self.tol is not None else self.grid,
                  steps=None if self.tol is not None else self.steps, tol=self.tol)
    if self.sigmas is not None:
      record["sigmas"] = list(self.sigmas)
    return record


class Overrides(NamedTuple):
  """Checked sampler overrides: `make_sampler` arguments, a file label, a JSON record."""

  kwargs: dict
  label: str
  record: dict


@dataclasses.dataclass(frozen=True, eq=False)
class Diffusion:
  """A diffusion model: `model` (F of genode.models) preconditioned by `formulation`."""

  formulation: Formulation
  model: Any  # a flax.linen.Module with genode.models' call signature
  data_shape: tuple[int, ...]
  num_classes: int = 0
  sampler: SamplerSpec = SamplerSpec()
  # The training objective: a name in `OBJECTIVES` and its parameters (config.objective).
  objective_name: str = "denoising"
  objective_params: tuple[tuple[str, Any], ...] = ()

  name = "diffusion"

  def __post_init__(self):
    check_objective(self.objective_name, dict(self.objective_params))
    self.objective()  # built once here, so that bad parameters fail at the config layer

  # -- training ---------------------------------------------------------------
  def init_params(self, key: jax.Array, batch: dict) -> Any:
    """The network's parameters for `key`; only the shape of batch["x"] is used.

    The key splits in three (init, dropout, unused), as in every earlier version of
    genode, so that a seed gives the same parameters.
    """
    init_key, dropout_key, _ = jax.random.split(key, 3)
    x = jnp.zeros((1,) + self.data_shape, jnp.float32)
    noise_labels = jnp.zeros((1,), jnp.float32)
    labels = {"class_labels": jnp.zeros((1,), jnp.int32)} if self.num_classes else {}
    try:
      hash(self.model)
      init = _init_variables
    except TypeError:  # a module with unhashable fields (e.g. a list): initialize eagerly
      init = _init_variables.__wrapped__
    return params_collection(init(self.model, init_key, dropout_key, x, noise_labels, labels))

  def objective(self) -> Objective:
    """The training objective `objective_name` (`OBJECTIVES`): by default the denoising
    loss (EDM eq. 8) of the preconditioned network."""
    return OBJECTIVES[self.objective_name](self, **dict(self.objective_params))

  def objective_inputs(self) -> tuple:
    """The objective's frozen inputs (e.g. a feature network's parameters): arguments of
    the compiled step after the batch (`make_train_step` `*frozen`), never constants."""
    build = OBJECTIVE_INPUTS.get(self.objective_name)
    return () if build is None else tuple(build(self, **dict(self.objective_params)))

  def train_network(self, params, x_in, c_noise, key, class_labels=None):
    """F in training mode (dropout from `key`), the network of the coupling objectives."""
    labels = {} if class_labels is None else {"class_labels": class_labels}
    return self.model.apply({"params": params}, x_in, c_noise, train=True,
                            rngs={"dropout": key}, **labels)

  # -- the trained model ------------------------------------------------------
  def network(self, params, class_labels: jax.Array | None = None):
    """F(x_in, c_noise) of the model with `params` (inference mode), class labels fixed."""

    def apply(x_in, c_noise):
      return self.model.apply({"params": params}, x_in, c_noise, class_labels=class_labels,
                              train=False)

    return apply

  def denoiser(self, params, class_labels: jax.Array | None = None,
               guidance_scale: float = 1.0) -> Denoiser:
    """D(x; σ), with classifier-free guidance D_u + w·(D_c − D_u) (Ho & Salimans 2022).

    `class_labels` None = unconditional; w = `guidance_scale` (1 = plain conditional).
    Guidance needs a model trained with label dropout (`model.label_dropout` > 0).
    """
    unconditional = precondition(self.formulation, self.network(params))
    if class_labels is None:
      if guidance_scale != 1.0:
        raise ValueError("guidance_scale != 1 needs class_labels (guidance mixes the "
                         "conditional and the unconditional denoiser)")
      return unconditional
    if self.num_classes == 0:
      raise ValueError("class_labels given, but the model is unconditional "
                       "(model.num_classes = 0)")
    conditional = precondition(self.formulation, self.network(params, class_labels))
    if guidance_scale == 1.0:
      return conditional

    def guided(x, sigma):
      d_uncond = unconditional(x, sigma)
      return d_uncond + guidance_scale * (conditional(x, sigma) - d_uncond)

    return guided

  # -- sampling ---------------------------------------------------------------
  @property
  def sigma_range(self) -> tuple[float, float]:
    """(σ_min, σ_max) of sampling and of the likelihood: the sampler's, else the
    formulation's."""
    spec = self.sampler
    lo = self.formulation.sigma_min if spec.sigma_min is None else spec.sigma_min
    hi = self.formulation.sigma_max if spec.sigma_max is None else spec.sigma_max
    return float(lo), float(hi)

  def sampler_sigmas(self, grid: str | None = None, steps: int | None = None,
                     sigma_min: float | None = None, sigma_max: float | None = None):
    """The sampling grid (σ_max … σ_min, 0): the spec's explicit `sigmas` if it has them
    and nothing is asked for, else the named grid, the spec filling what is not given."""
    spec = self.sampler
    if spec.sigmas is not None and grid is None and steps is None:
      return sampling.as_sigmas(spec.sigmas)
    lo, hi = self.sigma_range
    pick = lambda value, default: default if value is None else value
    if pick(grid, spec.grid) == OPTIMIZED_GRID:
      raise ValueError("The 'optimized' grid is stored in a workdir (launch.optimize_schedule):"
                       " sample it through the workdir (launch.sample --workdir=... "
                       "--grid=optimized), or give its σ's as sampler.sigmas")
    return sampling.get_sigmas(pick(grid, spec.grid), pick(steps, spec.steps),
                               pick(sigma_min, lo), pick(sigma_max, hi),
                               formulation=self.formulation)

  def sample(self, params, key: jax.Array, num: int, *, solver: str | None = None,
             sigmas: jax.Array | None = None, class_labels: jax.Array | None = None,
             guidance_scale: float | None = None, **options):
    """`num` samples (num, *data_shape) and a `SampleInfo`, through `genode.sampling.sample`.

    Defaults come from the sampler spec (`config.sampler`): solver and its options, grid
    or explicit σ's, coordinates; x starts at σ_0·n, n ~ N(0, I) from `key`. Call it under
    `jax.jit` (static num/solver) or use `make_sampler` to jit once.
    """
    spec = self.sampler
    if solver is None:
      solver, options = spec.solver, {**dict(spec.options), **options}
    sigmas = self.sampler_sigmas() if sigmas is None else sigmas
    guidance_scale = spec.guidance_scale if guidance_scale is None else guidance_scale
    if class_labels is None:
      guidance_scale = 1.0
    denoiser = self.denoiser(params, class_labels, guidance_scale)
    noise_key, solver_key = jax.random.split(key)
    x = sigmas[0] * jax.random.normal(noise_key, (num,) + self.data_shape, jnp.float32)
    formulation = self.formulation if spec.coordinates == "native" else None
    return sampling.sample(denoiser, x, sigmas, solver, key=solver_key,
                           formulation=formulation, **options)

  def make_sampler(self, num: int, **kwargs) -> Callable:
    """`jit`-compiled `(params, key, class_labels=None) -> (samples, info)` with the given
    `sample` arguments (solver, sigmas, guidance_scale, options)."""
    sigmas = kwargs.pop("sigmas", None)
    sigmas = self.sampler_sigmas() if sigmas is None else sigmas
    return jax.jit(lambda params, key, class_labels=None: self.sample(
        params, key, num, sigmas=sigmas, class_labels=class_labels, **kwargs))

  def sampler_overrides(self, *, solver: str | None = None, grid: str | None = None,
                        steps: int | None = None, sigmas=None,
                        guidance_scale: float | None = None, **options) -> "Overrides":
    """Checks sampler overrides (launch.sample's flags) against the spec; unknown solver
    or grid names → ValueError listing the valid ones, before anything is compiled."""
    spec = self.sampler
    if solver is not None:
      sampling.get_solver(solver)
    if grid is not None and grid not in sampling.GRIDS and grid != OPTIMIZED_GRID:
      raise ValueError(f"Unknown grid {grid!r}; valid grids: "
                       f"{list(sampling.GRIDS) + [OPTIMIZED_GRID]}")
    solver_name = solver or spec.solver
    if solver is None:
      options = {**dict(spec.options), **options}
    if grid == OPTIMIZED_GRID and sigmas is not None:  # a stored grid, resolved by the workdir
      sigmas = sampling.as_sigmas(sigmas)
      steps = len(sigmas) - 1
      label = f"{solver_name}_{OPTIMIZED_GRID}{steps}"
    elif sigmas is not None:
      sigmas = sampling.as_sigmas(sigmas)
      label, grid, steps = f"{solver_name}_sigmas{len(sigmas) - 1}", "explicit", None
    else:
      sigmas = self.sampler_sigmas(grid=grid, steps=steps)
      if spec.sigmas is not None and grid is None and steps is None:
        grid, steps = "explicit", None
      else:
        grid, steps = grid or spec.grid, steps or spec.steps
      label = f"{solver_name}_{grid}{steps if steps is not None else len(sigmas) - 1}"
    kwargs = dict(solver=solver_name, sigmas=sigmas, guidance_scale=guidance_scale, **options)
    record = dict(solver=solver_name, grid=grid, steps=steps,
                  sigmas=[float(s) for s in sigmas], options=dict(options))
    return Overrides(kwargs=kwargs, label=label, record=record)

  def grid_labels(self, num: int) -> jax.Array | None:
    """Labels 0, 1, …, K−1, 0, … for a sample grid of a conditional model (None if not)."""
    if self.num_classes == 0:
      return None
    return jnp.arange(num, dtype=jnp.int32) % self.num_classes

  # -- evaluation -------------------------------------------------------------
  def sampler_settings(self, eval_config) -> list[SamplerSetting]:
    """eval.solvers × eval.steps on eval.grid, then eval.adaptive_solvers × tolerances.

    With eval.optimized_grids, each solver also gets the grid "optimized" at each step
    count: the workdir's stored grid, which the evaluation fills in (`sigmas`) or skips.

    ValueError naming the valid choices for an unknown solver or grid.
    """
    adaptive = sorted(n for n, s in sampling.SOLVERS.items() if s.adaptive)
    fixed = sorted(set(sampling.SOLVERS) - set(adaptive))
    for solver in eval_config.solvers:
      if solver not in fixed:
        raise ValueError(f"Unknown solver {solver!r} in eval.solvers; valid fixed-grid "
                         f"solvers: {fixed} (adaptive ones go in eval.adaptive_solvers: "
                         f"{adaptive})")
    for solver in eval_config.adaptive_solvers:
      if solver not in adaptive:
        raise ValueError(f"Unknown solver {solver!r} in eval.adaptive_solvers; valid "
                         f"adaptive solvers: {adaptive}")
    if eval_config.grid not in sampling.GRIDS:
      raise ValueError(f"Unknown grid {eval_config.grid!r}; valid grids: "
                       f"{list(sampling.GRIDS)}")
    if any(int(n) < 1 for n in eval_config.steps):
      raise ValueError(f"eval.steps must be >= 1, got {eval_config.steps}")
    fixed_settings = [SamplerSetting(s, eval_config.grid, int(n))
                      for s in eval_config.solvers for n in eval_config.steps]
    if eval_config.get("optimized_grids", False):  # beside each solver's: its stored grids
      fixed_settings = [setting for s in eval_config.solvers for setting in (
          [SamplerSetting(s, eval_config.grid, int(n)) for n in eval_config.steps]
          + [SamplerSetting(s, OPTIMIZED_GRID, int(n)) for n in eval_config.steps])]
    adaptive_settings = [SamplerSetting(s, tol=float(t))
                         for s in eval_config.adaptive_solvers for t in eval_config.tolerances]
    return fixed_settings + adaptive_settings

  def setting_sampler(self, setting: SamplerSetting, num: int) -> tuple[Callable, dict]:
    """(jitted `(params, key, labels) -> (x, info)` for `setting`, its σ range record)."""
    if setting.sigmas is not None:
      sigmas = jnp.asarray(sampling.as_sigmas(setting.sigmas))
    else:
      sigmas = jnp.asarray(self.sampler_sigmas(grid=setting.grid, steps=setting.steps))
    fn = jax.jit(lambda p, key, labels: self.sample(
        p, key, num, solver=setting.solver, sigmas=sigmas, class_labels=labels,
        **setting.options))
    positive = sigmas[sigmas > 0]
    return fn, dict(sigma_max=float(sigmas[0]), sigma_min=float(positive[-1]))

  def log_likelihood(self, params, x: jax.Array, key: jax.Array, *,
                     class_labels: jax.Array | None = None, trace: str = "exact",
                     num_probes: int = 1, rtol: float = 1e-5, atol: float = 1e-5):
    """log p(x) (B,) in nats of the PF-ODE between the sampler's σ_min and σ_max, prior
    N(0, σ_max² I) (`genode.likelihood`), and its `LikelihoodInfo` (nfe, stderr, …)."""
    sigma_min, sigma_max = self.sigma_range
    return likelihood_lib.log_likelihood(
        self.denoiser(params, class_labels), x, sigma_min=sigma_min, sigma_max=sigma_max,
        trace=trace, key=key if trace == "hutchinson" else None, num_probes=num_probes,
        rtol=rtol, atol=atol)

  def likelihood_record(self) -> dict:
    """What `log_likelihood` integrates over, for the evaluation's record."""
    sigma_min, sigma_max = self.sigma_range
    return dict(sigma_min=sigma_min, sigma_max=sigma_max)

  def describe(self) -> str:
    return f"{type(self.formulation).__name__} {type(self.model).__name__}"


# -- training objectives of the diffusion family -----------------------------------


def _denoising(family: Diffusion) -> Objective:
  """EDM eq. 8 with fresh noise: every formulation's own training loss."""
  return denoising_objective(family.formulation, family.model,
                             class_conditional=family.num_classes > 0)


REFLOW_TIMES = ("uniform", "u_shaped", "formulation")


def _reflow(family: Diffusion, time: str = "uniform", time_a: float = 4.0,
            loss: str = "l2") -> Objective:
  """k-rectified flow (Liu et al. 2022): eq. 8 with the coupling's stored noise
  (batch["noise"]). Its training time: "uniform", t ~ U[ε, 1] in RF time (the paper's);
  "u_shaped", the U-shaped density ∝ e^{a t} + e^{a(1−t)} in RF time, a = `time_a`
  (Lee, Lin & Fanti 2024, `UShapedTimeSigma`); "formulation", the formulation's own
  p_train. `time_a` is used by "u_shaped" only. `loss`: "l2", the squared L2 of the
  velocity residual (the paper's), or "pseudo_huber", sqrt(‖v_θ − (z − x)‖² + c²) − c,
  c = 0.00054·√D (Lee, Lin & Fanti 2024, §4.2; `reflow_objectives.reflow_terms`)."""
  if time not in REFLOW_TIMES:
    raise ValueError(f"Unknown objective.time {time!r}; valid: {list(REFLOW_TIMES)}")
  time_a = check_u_shape(time_a)
  loss = reflow_objectives.check_reflow_loss(loss)
  sample_sigma = None  # "formulation": the objective's default, p_train
  if time == "uniform":
    sample_sigma = UniformTimeSigma(family.formulation)
  elif time == "u_shaped":
    sample_sigma = UShapedTimeSigma(family.formulation, time_a)
  return reflow_objectives.make_reflow_objective(family.formulation, family.train_network,
                                                 sample_sigma=sample_sigma, loss=loss)


# objective.loss: a pixel distance (`PIXEL_DISTANCES`), "feature", or "<pixel>+feature"
DISTILL_LOSSES = (*reflow_objectives.PIXEL_DISTANCES, "feature",
                  *(f"{name}+feature" for name in reflow_objectives.PIXEL_DISTANCES))


def _distill_terms(loss: str) -> tuple[str | None, bool]:
  """(pixel distance or None, with the feature distance) of `objective.loss`."""
  if loss not in DISTILL_LOSSES:
    raise ValueError(f"Unknown objective.loss {loss!r}; valid: {list(DISTILL_LOSSES)}")
  pixel, _, feature = loss.partition("+")
  return (None, True) if pixel == "feature" else (pixel, feature == "feature")


def _distill(family: Diffusion, num_steps: int = 1, loss: str = "l2",
             feature_net: str = "digits", feature_weight: float = 1.0) -> Objective:
  """k-step distillation (Liu et al. 2022, §2.3): the student's `num_steps`-step Euler
  output from the stored noise against the teacher's endpoint. `loss`: "l2" (pixels),
  "pseudo_huber" (sqrt(‖x̂ − x‖² + c²) − c, c = 0.00054·√D; Song & Dhariwal 2023, §3.3),
  "feature" (the LPIPS-style distance of the `feature_net` dataset's feature network,
  `genode.reflow.feature_loss`; its parameters are the step's frozen input, see
  `objective_inputs`) or "<pixel>+feature" (pixel + feature_weight · feature)."""
  reflow_objectives.check_one_step(family, num_steps)
  pixel, with_feature = _distill_terms(loss)
  distance = None
  if with_feature:
    network = feature_loss.FeatureLoss(feature_net)
    network.check_shape(family.data_shape)
    distance = network.distance
  return reflow_objectives.make_distillation_objective(
      family.formulation, family.train_network, num_steps=int(num_steps),
      sigma_max=family.sigma_range[1], pixel_distance=pixel or "l2",
      feature_distance=distance, pixel_weight=0.0 if pixel is None else 1.0,
      feature_weight=float(feature_weight) if pixel and with_feature else 1.0)


def _distill_inputs(family: Diffusion, loss: str = "l2", feature_net: str = "digits",
                    **unused) -> tuple:
  """The distill objective's frozen inputs: the feature network's parameters, if any."""
  del family, unused
  _, with_feature = _distill_terms(loss)
  return (feature_loss.FeatureLoss(feature_net).params(),) if with_feature else ()


# name -> builder(family, **config.objective params) -> Objective
OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "denoising": _denoising, "reflow": _reflow, "distill": _distill}
# name -> builder(family, **config.objective params) -> the objective's frozen inputs
# (replicated, untrained arguments of the step); objectives not listed take none.
OBJECTIVE_INPUTS: dict[str, Callable[..., tuple]] = {"distill": _distill_inputs}


def check_objective(name: str, params: dict) -> None:
  """ValueError listing the valid objectives, or the valid parameters of `name`."""
  if name not in OBJECTIVES:
    raise ValueError(f"Unknown objective {name!r}; valid objectives: {sorted(OBJECTIVES)}")
  valid = list(inspect.signature(OBJECTIVES[name]).parameters)[1:]
  unknown = sorted(set(params) - set(valid))
  if unknown:
    raise ValueError(f"Unknown parameters {unknown} for objective {name!r}; its "
                     f"parameters: {valid or 'none'}")


def params_collection(variables) -> Any:
  """The "params" of flax variables; ValueError for other collections (batch statistics)."""
  other = sorted(set(variables) - {"params"})
  if other:
    raise ValueError(f"The model has variable collections {other} besides 'params'; the "
                     "train step only supports stateless models (no batch statistics).")
  return variables["params"]


@functools.partial(jax.jit, static_argnames="model")
def _init_variables(model, init_key, dropout_key, x, noise_labels, labels):
  """model.init, compiled once per (model, shapes): flax modules are hashable."""
  return model.init({"params": init_key, "dropout": dropout_key}, x, noise_labels, train=False,
                    **labels)

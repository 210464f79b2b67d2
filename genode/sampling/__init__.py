"""Sampling: σ grids (data), solver records (data) and `sample` on genode's ODE backend.

Every solver is one `diffrax.diffeqsolve` in `genode.ode` (the only package that
imports diffrax); this package holds what a config chooses: a grid (`GRIDS` by name, or
an explicit list through `as_sigmas`), a `Solver` (`SOLVERS`), its options.

    sigmas = get_sigmas("karras", 18, sigma_min=0.002, sigma_max=80.0)  # (19,), last 0
    x, info = sample(denoiser, sigmas[0] * noise, sigmas, "heun")       # info.nfe == 35
    xs, _ = trajectory(denoiser, sigmas[0] * noise, sigmas, "euler")     # (19, B, ...)
"""

from genode.sampling.grids import GRIDS as GRIDS
from genode.sampling.grids import GridRule as GridRule
from genode.sampling.grids import append_zero as append_zero
from genode.sampling.grids import as_sigmas as as_sigmas
from genode.sampling.grids import check_sigmas as check_sigmas
from genode.sampling.grids import ddpm_timestep_sigmas as ddpm_timestep_sigmas
from genode.sampling.grids import get_sigmas as get_sigmas
from genode.sampling.grids import karras_sigmas as karras_sigmas
from genode.sampling.grids import loglinear_sigmas as loglinear_sigmas
from genode.sampling.grids import uniform_t_sigmas as uniform_t_sigmas
from genode.sampling.methods import SOLVERS as SOLVERS
from genode.sampling.methods import AdaptiveOptions as AdaptiveOptions
from genode.sampling.methods import ChurnOptions as ChurnOptions
from genode.sampling.methods import LMSOptions as LMSOptions
from genode.sampling.methods import NoOptions as NoOptions
from genode.sampling.methods import Solver as Solver
from genode.sampling.methods import get_solver as get_solver
from genode.sampling.sampler import SampleInfo as SampleInfo
from genode.sampling.sampler import sample as sample
from genode.sampling.sampler import trajectory as trajectory

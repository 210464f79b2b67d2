"""Sampling: grids of noise levels and `sample`, every solver through `diffrax.diffeqsolve`.

This package is the only one that imports diffrax; `solve_adaptive` is its adaptive
solve for other modules (the likelihood).

    sigmas = get_sigmas("karras", 18, sigma_min=0.002, sigma_max=80.0)  # (19,), last 0
    x, info = sample(denoiser, sigmas[0] * noise, sigmas, "heun")       # info.nfe == 35
"""

from genode.sampling.adaptive import ADAPTIVE_SOLVERS as ADAPTIVE_SOLVERS
from genode.sampling.adaptive import Counts as Counts
from genode.sampling.adaptive import initial_step as initial_step
from genode.sampling.adaptive import solve_adaptive as solve_adaptive
from genode.sampling.grids import GRIDS as GRIDS
from genode.sampling.grids import append_zero as append_zero
from genode.sampling.grids import check_sigmas as check_sigmas
from genode.sampling.grids import get_sigmas as get_sigmas
from genode.sampling.grids import karras_sigmas as karras_sigmas
from genode.sampling.grids import loglinear_sigmas as loglinear_sigmas
from genode.sampling.grids import uniform_t_sigmas as uniform_t_sigmas
from genode.sampling.sample import SOLVERS as SOLVERS
from genode.sampling.sample import AdaptiveOptions as AdaptiveOptions
from genode.sampling.sample import ChurnOptions as ChurnOptions
from genode.sampling.sample import LMSOptions as LMSOptions
from genode.sampling.sample import SampleInfo as SampleInfo
from genode.sampling.sample import get_solver as get_solver
from genode.sampling.sample import sample as sample
from genode.sampling.solvers import DPMSolverPP2M as DPMSolverPP2M
from genode.sampling.solvers import DPMSolverPP3M as DPMSolverPP3M
from genode.sampling.solvers import EDMStochasticHeun as EDMStochasticHeun
from genode.sampling.solvers import LinearMultistep as LinearMultistep
from genode.sampling.solvers import lms_coefficients as lms_coefficients
from genode.sampling.solvers import lms_data_coefficients as lms_data_coefficients

"""genode's ODE backend: the one package that imports diffrax.

* `terms`: the PF-ODE / reverse-SDE vector fields of a denoiser (EDM eq. 4).
* `solvers`: custom `diffrax.AbstractSolver`s (DPM-Solver++, linear multistep, EDM Alg. 2).
* `methods`: the Runge–Kutta and adjoint tables, by name.
* `adaptive`: `solve_adaptive` (Tsit5/Dopri5 + `PIDController`, differentiable).
* `fixed`: `solve_on_grid` (`StepTo`, optional trajectory) and `solve_constant_steps`.
* `samplers`: each sampler's route over a σ grid (used by `genode.sampling`'s records).
* `cnf`: `cnf_log_likelihood`, FFJORD eq. 4 for any drift f(x, t).

    logp, info = cnf_log_likelihood(f, x, 0.0, 1.0, prior_logp, trace="hutchinson", key=key)
"""

from genode.ode.adaptive import Counts as Counts
from genode.ode.adaptive import initial_step as initial_step
from genode.ode.adaptive import solve_adaptive as solve_adaptive
from genode.ode.cnf import CNFInfo as CNFInfo
from genode.ode.cnf import cnf_log_likelihood as cnf_log_likelihood
from genode.ode.cnf import exact_divergence as exact_divergence
from genode.ode.cnf import gaussian_log_prob as gaussian_log_prob
from genode.ode.cnf import hutchinson_divergence as hutchinson_divergence
from genode.ode.fixed import solve_constant_steps as solve_constant_steps
from genode.ode.fixed import solve_on_grid as solve_on_grid
from genode.ode.methods import ADJOINTS as ADJOINTS
from genode.ode.methods import RUNGE_KUTTA as RUNGE_KUTTA
from genode.ode.solvers import DPMSolverPP2M as DPMSolverPP2M
from genode.ode.solvers import DPMSolverPP3M as DPMSolverPP3M
from genode.ode.solvers import EDMStochasticHeun as EDMStochasticHeun
from genode.ode.solvers import LinearMultistep as LinearMultistep
from genode.ode.terms import pf_ode_drift as pf_ode_drift

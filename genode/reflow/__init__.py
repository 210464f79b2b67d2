"""Rectified flow beyond one model: couplings, reflow, distillation, straightness.

Liu, Gong & Liu 2022, "Flow Straight and Fast". Every genode model is a denoiser
D(x̄; σ), so the couplings (z, x = ODE_teacher(z)) can come from any teacher and sampler.
Conventions: z is standard normal noise, the teacher starts at x̄ = σ_max·z and x is its
state at σ = 0; genode's RF time runs t = 0 data → t = 1 noise (the paper's τ = 1 − t).

* `store`: the on-disk coupling store (`CouplingSettings`, `write_couplings`);
* `dataset`: `Couplings`, the stored pairs as a genode dataset, streamed from disk;
* `permutation`: `FeistelPermutation`, O(1)-per-row shuffling of N stored pairs;
* `objectives`: the reflow and k-step distillation objectives;
* `rf_time`: RF time t = σ/(1 + σ), grids uniform in it, the paper's training time;
* `straightness`: S(Z) (eq. 3) on simulated trajectories in RF coordinates;
* `ideal`: the closed-form (straight) denoiser of a linear coupling;
* `plots`: the 2-D trajectory figure (imported on its own: it needs matplotlib).

    settings = CouplingSettings(num_pairs=16384, shard_size=4096, batch_size=1024, seed=0,
                                shape=(2,), sigma_max=999.0, teacher={...}, sampler={...})
    write_couplings(out, make_teacher_sample(D, sigmas, "dopri5"), settings)
    data = Couplings(out)                         # train_batch → dict(x, noise)
    objective = make_reflow_objective(RectifiedFlow(), network_fn)
"""

from genode.reflow.dataset import Couplings as Couplings
from genode.reflow.ideal import LinearCoupling as LinearCoupling
from genode.reflow.objectives import batch_denoiser as batch_denoiser
from genode.reflow.objectives import euler_endpoint as euler_endpoint
from genode.reflow.objectives import make_distillation_objective as make_distillation_objective
from genode.reflow.objectives import make_reflow_objective as make_reflow_objective
from genode.reflow.objectives import reflow_denoising_loss as reflow_denoising_loss
from genode.reflow.permutation import FeistelPermutation as FeistelPermutation
from genode.reflow.rf_time import UniformTimeSigma as UniformTimeSigma
from genode.reflow.rf_time import rf_time_sigmas as rf_time_sigmas
from genode.reflow.store import CouplingSettings as CouplingSettings
from genode.reflow.store import make_teacher_sample as make_teacher_sample
from genode.reflow.store import read_manifest as read_manifest
from genode.reflow.store import shard_inputs as shard_inputs
from genode.reflow.store import write_couplings as write_couplings
from genode.reflow.straightness import Straightness as Straightness
from genode.reflow.straightness import Trajectory as Trajectory
from genode.reflow.straightness import measure_straightness as measure_straightness
from genode.reflow.straightness import rf_trajectory as rf_trajectory
from genode.reflow.straightness import trajectory_straightness as trajectory_straightness

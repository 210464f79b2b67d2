"""The shared body of the FFJORD configs (configs/toy2d_ffjord.py, configs/digits_ffjord.py).

Fields besides the base ones (configs/base.py; `formulation` and `objective` are dropped:
the cnf family has neither):

  family      "cnf" (genode.ffjord.CNF)
  model       the vector field f(x, t): "concatsquash" (FFJORD's concatsquash MLP),
              hidden_dims, activation (tanh | softplus)
  cnf         time_length T (data at t = 0, N(0, I) at t = T); num_levels (256 = dequantize
              8-bit data in training, 0 = continuous data); train and likelihood: the solves
              of training and of the evaluation's NLL (genode.ffjord.Solve: trace, probe,
              num_probes, solver, num_steps (None = adaptive), rtol, atol, max_steps,
              adjoint). launch.evaluate's nll.trace/rtol/atol override the likelihood ones.
              kinetic_weight, jacobian_weight: RNODE's λ_K, λ_J (Finlay et al. 2020):
              training adds λ_K ∫‖f‖² dt + λ_J ∫‖∇f‖_F² dt to −log p(x); 0 = off.
              whitening: "none" | "diagonal" | "full": an affine bijector z = L⁻¹(x − μ)
              before the flow, μ and Σ = L Lᵀ fitted once to the training split (never
              val/test) and stored in the parameters (genode/whitening.py); with f = 0
              the model is the fitted Gaussian.
  sampler     solver, steps (None = adaptive at rtol/atol), rtol, atol, max_steps,
              num_samples: training-time sample grids and launch.sample's defaults
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import base


def ffjord_config(*, hidden_dims, activation: str, num_levels: int, train_solver: str,
                  train_steps: int) -> ml_collections.ConfigDict:
  config = base.get_base_config()
  # The checkpointed adjoint fails inside shard_map and pmap on this stack (genode/ffjord.py):
  # one device. parallel="shard_map"/"pmap" need cnf.train.adjoint="backsolve".
  config.parallel = "single"
  del config["formulation"]
  del config["objective"]
  config.family = "cnf"
  config.model = ml_collections.ConfigDict(dict(
      name="concatsquash", hidden_dims=tuple(hidden_dims), activation=activation))
  config.cnf = ml_collections.ConfigDict(dict(
      time_length=1.0,
      num_levels=num_levels,
      train=ml_collections.ConfigDict(dict(
          trace="hutchinson", probe="rademacher", num_probes=1, solver=train_solver,
          num_steps=config_dict.placeholder(int), adjoint="recursive_checkpoint",
          max_steps=64)),
      likelihood=ml_collections.ConfigDict(dict(
          solver="dopri5", rtol=1e-5, atol=1e-5, max_steps=4096)),
      kinetic_weight=0.0,
      jacobian_weight=0.0,
      whitening="none",
  ))
  config.cnf.train.num_steps = train_steps
  config.sampler = ml_collections.ConfigDict(dict(
      solver="dopri5", steps=config_dict.placeholder(int), rtol=1e-5, atol=1e-5,
      max_steps=4096, num_samples=64))
  return config

"""Evaluation of a trained workdir: samplers × metrics (genode.evaluation.evaluate).

  python -m launch.evaluate --workdir=/tmp/genode_main
  python -m launch.evaluate --workdir=/tmp/genode_main --step=1500 --params=raw \
      --eval.solvers="('heun',)" --eval.steps="(18,)" --eval.num_samples=1000
  python -m launch.evaluate --workdir=/tmp/genode/smoke --eval=configs/eval.py:runlocal
  python -m launch.evaluate --workdir=W --eval.optimized_grids=True --eval.steps="(5, 10)"

Fields:

  seed            sampling noise, dequantization noise, Hutchinson probes, true toy samples
  num_samples     samples per sampler setting for the metrics; 0 = as many as the test split
                  (at most `max_samples`), so that the feature-Fréchet floor (train vs test)
                  and the samples' distance have the same sample-size bias
  max_samples     cap for num_samples = 0
  repeats         sample sets of num_samples per setting (seed noise of the metrics): > 1
                  adds per-set values, their mean and sd, and the pooled metric of all sets
  batch_size      samples per jitted sampling call
  grid_samples    samples drawn in each PNG
  solvers         fixed-grid solvers, each run at every entry of `steps` on `grid`
  grid, steps     the σ grid (karras | loglinear | uniform_t) and its step counts
  optimized_grids also each solver on the workdir's optimized grid (launch.optimize_schedule)
                  at each step count, where one is stored (others are skipped, saying so)
  adaptive_solvers  adaptive solvers (tsit5, dopri5), each run at every `tolerances`
                  entry (rtol = atol = tol); their NFE is what they used
  temperatures    a flow family's sampler settings: z = T·ε for each T (other families
                  take their settings from the solver fields above)
  metrics         names (see METRICS in genode/evaluation/evaluate.py); () = the dataset's
                  defaults: toy2d → sliced_wasserstein, mmd, true_log_likelihood, nll;
                  digits/mnist → feature_fd, nll; other images → fid, nll
  toy             mmd_bandwidth h of k(x, y) = exp(−‖x − y‖²/(2h²)); num_projections of SW₂
  nll             num_examples (test split), batch_size, trace (auto | exact | hutchinson;
                  auto = exact for ≤ exact_max_dim dimensions), num_probes, rtol, atol,
                  num_dequantizations (uniform-dequantization draws per test example,
                  averaged; the standard error is over examples)
  inception_weights  the FID weights .npz (None = $GENODE_CACHE/inception_v3_fid.npz)
"""

import ml_collections
from ml_collections import config_dict


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_samples = 0
  config.max_samples = 10_000
  config.repeats = 1
  config.batch_size = 500
  config.grid_samples = 64
  config.solvers = ("euler", "heun", "dpmpp_2m", "dpmpp_3m", "lms", "lms_data")
  config.grid = "karras"
  config.steps = (5, 10, 18, 32)
  config.optimized_grids = False
  config.adaptive_solvers = ("tsit5",)
  config.tolerances = (1e-2, 1e-3, 1e-4)
  config.temperatures = (1.0, 0.7)
  config.metrics = ()
  config.toy = ml_collections.ConfigDict(dict(mmd_bandwidth=0.5, num_projections=512))
  config.nll = ml_collections.ConfigDict(dict(
      num_examples=64, batch_size=64, trace="auto", exact_max_dim=64, num_probes=1,
      rtol=1e-5, atol=1e-5, num_dequantizations=1))
  config.inception_weights = config_dict.placeholder(str)
  if arg == "runlocal":  # a CPU smoke test: seconds
    config.update(num_samples=64, batch_size=64, grid_samples=16, solvers=("euler", "heun"),
                  steps=(4,), tolerances=(1e-2,), temperatures=(1.0,))
    config.nll.update(num_examples=8, batch_size=8, rtol=1e-3, atol=1e-3)
  elif arg:
    raise ValueError(f"Unknown eval config argument {arg!r}; valid: 'runlocal' or none")
  return config

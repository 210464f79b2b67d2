"""The evaluation of exact-likelihood models (flows) and of the comparison table.

  python -m launch.evaluate --workdir=/tmp/genode/digits_realnvp --eval=configs/eval_flows.py
  python -m launch.evaluate --workdir=/tmp/genode/smoke --eval=configs/eval_flows.py:runlocal

configs/eval.py with the NLL of every test example (digits: all 297), each averaged over
4 uniform-dequantization draws (the standard error is over examples), and sample grids at
temperatures 1.0 and 0.7. A diffusion workdir takes the same NLL protocol through its
PF-ODE (slow: pass --eval.nll.num_examples=64 there, and say so).
"""

from configs import eval as eval_lib


def get_config(arg=None):
  config = eval_lib.get_config(arg)
  if arg != "runlocal":
    config.nll.update(num_examples=10_000, batch_size=500, num_dequantizations=4)
    config.temperatures = (1.0, 0.7)
  else:
    config.nll.num_dequantizations = 2
  return config

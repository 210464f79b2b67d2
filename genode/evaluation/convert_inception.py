"""Converts pytorch-fid's Inception weights to genode's Flax `.npz` (run once, needs torch).

Get the weights used by pytorch-fid (and equal to the TF FID graph of 2015-12-05):

    wget https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

then, in an environment with torch (only this step needs it; genode never imports torch):

    python -m genode.evaluation.convert_inception \
        --input=pt_inception-2015-12-05-6726825d.pth \
        [--output=$GENODE_CACHE/inception_v3_fid.npz]

The output (default `genode.evaluation.inception.default_weights_path()`, i.e.
`$GENODE_CACHE/inception_v3_fid.npz`, `$GENODE_CACHE` defaulting to ~/.cache/genode) is
the Flax variable tree flattened with '/' (see `genode/evaluation/inception.py`).
Pass another location to evaluation with `--eval.inception_weights=PATH`.

Mapping of the torch state dict (torchvision Inception3 module names are kept):

    X.conv.weight (O, I, kh, kw)  → params/X/conv/kernel (kh, kw, I, O)
    X.bn.weight / X.bn.bias       → params/X/bn/scale / params/X/bn/bias
    X.bn.running_mean / _var      → batch_stats/X/bn/mean / batch_stats/X/bn/var
    fc.*, *.num_batches_tracked   → dropped (the logits are not used for FID)
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Mapping

import numpy as np

from genode.evaluation import inception

_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def convert_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """torch state dict (names → numpy arrays) → flat '/'-keyed Flax variables (float32)."""
  flat = {}
  for name, value in state_dict.items():
    value = np.asarray(value)
    module, _, leaf = name.rpartition(".")
    if name.startswith("fc.") or leaf == "num_batches_tracked":
      continue
    path = module.replace(".", "/")
    if module.endswith(".conv") and leaf == "weight" and value.ndim == 4:
      flat[f"params/{path}/kernel"] = np.transpose(value, (2, 3, 1, 0)).astype(np.float32)
    elif module.endswith(".bn") and leaf in _BN:
      collection, flax_leaf = _BN[leaf]
      flat[f"{collection}/{path}/{flax_leaf}"] = value.astype(np.float32)
    else:
      raise ValueError(f"unexpected entry {name!r} {value.shape} in the Inception state dict; "
                       "expected '<module>.conv.weight', '<module>.bn.{weight,bias,running_mean,"
                       "running_var}' or 'fc.*'")
  return flat


def _load_torch_state_dict(path) -> dict[str, np.ndarray]:
  import torch  # pylint: disable=import-outside-toplevel  # conversion-time only

  state = torch.load(path, map_location="cpu", weights_only=True)
  return {k: v.numpy() for k, v in state.items()}


def convert_file(input_path, output_path=None) -> pathlib.Path:
  """Reads the `.pth`, converts, checks against the network's shapes and writes the `.npz`."""
  output_path = pathlib.Path(output_path or inception.default_weights_path())
  flat = convert_state_dict(_load_torch_state_dict(input_path))
  expected = inception.variable_shapes()
  if set(flat) != set(expected) or any(flat[k].shape != expected[k] for k in expected):
    raise ValueError(f"{input_path} does not match Inception-v3: keys differ by "
                     f"{sorted(set(flat) ^ set(expected))[:5]}")
  output_path.parent.mkdir(parents=True, exist_ok=True)
  np.savez(output_path, **flat)
  return output_path


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--input", required=True, help="pt_inception-2015-12-05-6726825d.pth")
  parser.add_argument("--output", default=None,
                      help=f"output .npz (default {inception.default_weights_path()})")
  args = parser.parse_args(argv)
  print(f"wrote {convert_file(args.input, args.output)}")


if __name__ == "__main__":
  main()

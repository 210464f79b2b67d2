"""Normalizing flows: bijector layers and the NICE, RealNVP and Glow architectures.

Every layer is a linen `Bijector` with `__call__(x, inverse=False) -> (y, log_det (B,))`
and `forward`, `inverse`, `inverse_and_log_det`; every architecture is a `Flow` with
`forward(x) -> (z (B, d), log_det)`, `inverse(z)`, `log_prob(x)` and
`sample(key, num, temperature)`. See genode/flows/architectures.py for the conventions.
"""

from genode.flows.actnorm import ActNorm
from genode.flows.architectures import FLOWS, NICE, Flow, Glow, RealNVP, get_flow
from genode.flows.base import Bijector
from genode.flows.conv1x1 import Invertible1x1Conv, Invertible1x1ConvLU
from genode.flows.coupling import Coupling
from genode.flows.dequantization import flow_bits_per_dim, flow_log_prob_of_levels
from genode.flows.masks import alternate_mask, channel_mask, checkerboard_mask, make_mask
from genode.flows.multiscale import Squeeze, factor_in, factor_out, squeeze, unsqueeze
from genode.flows.priors import PRIORS, StandardLogistic, StandardNormal, get_prior
from genode.flows.scaling import Homothety, LogitTransform
from genode.flows.splines import num_spline_params, rational_quadratic_spline
from genode.flows.transforms import (AdditiveTransform, AffineSigmoidTransform,
                                     AffineTanhTransform, SplineTransform, make_transform)

__all__ = [
    "ActNorm", "AdditiveTransform", "AffineSigmoidTransform", "AffineTanhTransform",
    "Bijector", "Coupling", "FLOWS", "Flow", "Glow", "Homothety", "Invertible1x1Conv",
    "Invertible1x1ConvLU", "LogitTransform", "NICE", "PRIORS", "RealNVP", "SplineTransform",
    "Squeeze", "StandardLogistic", "StandardNormal", "alternate_mask", "channel_mask",
    "checkerboard_mask", "factor_in", "factor_out", "flow_bits_per_dim",
    "flow_log_prob_of_levels", "get_flow", "get_prior", "make_mask", "make_transform",
    "num_spline_params", "rational_quadratic_spline", "squeeze", "unsqueeze",
]

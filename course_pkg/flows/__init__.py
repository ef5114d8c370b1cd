"""Flow layers. Every layer follows the direction contract of :class:`Flow`.

The transformers of coupling and autoregressive layers (elementwise maps set by a conditioner,
not flows themselves: ``Additive``, ``Affine``, ``RationalQuadraticSpline``) are in
:mod:`course_pkg.flows.transformers`: ``transformers.Affine`` is RealNVP's map, not the flow layer
:class:`~course_pkg.flows.elementwise.Affine` exported here.
"""

from course_pkg.flows.base import Flow, Inverse, Sequential, sum_except_batch
from course_pkg.flows.elementwise import ActNorm, Affine, LeakyReLUFlow, Logit, Sigmoid
from course_pkg.flows.linear import DenseWeight, InvertibleConv1x1, LULinear, LUWeight, Permutation
from course_pkg.flows.planar import Planar, Radial
from course_pkg.flows import transformers
from course_pkg.flows.coupling import (
    AdditiveCoupling,
    BaseCoupling,
    AffineCoupling,
    Coupling,
    alternating_mask,
    channel_mask,
    checkerboard_mask,
    half_mask,
)
from course_pkg.flows.autoregressive import (
    MADE,
    MaskedAutoregressive,
    MaskedLinear,
    autoregressive_order,
    hidden_degrees,
    input_degrees,
)
from course_pkg.flows.continuous import CNF, divergence, exact_probes, hutchinson_probes
from course_pkg.flows.multiscale import FactorOut, Squeeze
from course_pkg.flows.split_coupling import SplitAdditiveCoupling, SplitAffineCoupling, SplitCoupling, half_split

__all__ = [
    "Flow",
    "Inverse",
    "Sequential",
    "sum_except_batch",
    "ActNorm",
    "Affine",
    "LeakyReLUFlow",
    "Logit",
    "Sigmoid",
    "DenseWeight",
    "InvertibleConv1x1",
    "LULinear",
    "LUWeight",
    "Permutation",
    "Planar",
    "Radial",
    "AdditiveCoupling",
    "AffineCoupling",
    "BaseCoupling",
    "Coupling",
    "alternating_mask",
    "channel_mask",
    "checkerboard_mask",
    "half_mask",
    "MADE",
    "MaskedAutoregressive",
    "MaskedLinear",
    "autoregressive_order",
    "hidden_degrees",
    "input_degrees",
    "CNF",
    "divergence",
    "exact_probes",
    "hutchinson_probes",
    "FactorOut",
    "Squeeze",
    "SplitAdditiveCoupling",
    "SplitAffineCoupling",
    "SplitCoupling",
    "half_split",
    "transformers",
]

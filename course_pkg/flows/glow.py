"""Glow's building blocks (Kingma & Dhariwal 2018): the step of flow and the split with a learned prior (chapter 6).

A **step of flow** is three layers on ``[B, C, H, W]``, each with a cheap log-determinant:

    ActNorm:              h = exp(log_scale) * x + shift            log|det| = H W sum_c log_scale_c
    invertible 1x1 conv:  h' = W h at every pixel, W = P L U        log|det| = H W sum_i log|u_ii|
    affine coupling:      z_B = h'_B exp(s(h'_A)) + t(h'_A)         log|det| = sum s

so the step's log-det is the sum of the three. The **split** ends a level of the multi-scale
architecture: half of the channels leave for the latent, under a Gaussian prior whose mean and
scale a network reads off the other half,

    log p(z_out | z_kept) = log N(z_out; mu(z_kept), sigma(z_kept)^2).

Standardising, ``eps = (z_out - mu) / sigma``, turns that prior into a standard normal on ``eps``
plus ``-sum log sigma``: exactly an affine coupling that transforms ``z_out`` conditioned on
``z_kept``, followed by a standard normal base. So the learned prior is written as a coupling
(:func:`split_prior`), and the model's base stays ``N(0, I)``. Sampling at temperature ``T``
draws ``eps`` with standard deviation ``T``, which is Glow's ``sigma T`` for the split-off
variables.

Direction as in :class:`~course_pkg.flows.base.Flow`: ``forward`` maps data ``x`` to latent ``z``
and returns ``log|det dz/dx|``; ``inverse`` maps back and returns ``log|det dx/dz|``.
"""

from __future__ import annotations

from course_pkg.flows.base import Flow, Inverse, Sequential
from course_pkg.flows.elementwise import ActNorm
from course_pkg.flows.linear import InvertibleConv1x1
from course_pkg.flows.multiscale import FactorOut, Squeeze
from course_pkg.flows.split_coupling import SplitAffineCoupling, half_split
from course_pkg.nets import GlowNet, zero_conv


class GlowStep(Sequential):
    """One step of flow: ``ActNorm(C)``, ``InvertibleConv1x1(C, lu=True)``, an affine coupling of the channel halves.

    ``x``, ``z`` ``[B, C, H, W]`` with ``C >= 2``; ``log_det`` ``[B]`` is the sum of the three layers'.
    The coupling keeps the first ``C // 2`` channels and transforms the others through a
    :class:`~course_pkg.nets.GlowNet` with ``hidden_channels``; the 1x1 convolution before it
    decides, and learns, which mixtures of channels those halves are. A new step is ActNorm (set
    on its first batch), a random rotation or reflection, and an identity coupling.
    """

    def __init__(self, channels: int, hidden_channels: int) -> None:
        kept, transformed = half_split(channels, parity=0)
        super().__init__(
            ActNorm(channels),
            InvertibleConv1x1(channels, lu=True),
            SplitAffineCoupling(channels, 0, GlowNet(kept, 2 * transformed, hidden_channels)),
        )


def split_prior(channels: int) -> SplitAffineCoupling:
    """The learned prior of a split as a coupling: ``eps = (z_out - mu(z_kept)) / sigma(z_kept)``.

    ``[B, channels, H, W]``: the first ``channels // 2`` channels (``z_kept``) stay, the others
    (``z_out``) are standardised, and ``log_det = -sum log sigma``; a standard normal on ``eps``
    then gives ``log N(z_out; mu, sigma^2)``. The network is one zero-initialised 3x3 convolution
    (Glow's), so a new prior is ``N(0, I)``; its scale is soft-clipped as in every affine coupling.
    """
    kept, transformed = half_split(channels, parity=0)
    return SplitAffineCoupling(channels, 0, zero_conv(kept, 2 * transformed))


def glow_levels(channels: int, num_levels: int, steps_per_level: int, hidden_channels: int) -> Flow:
    """Glow's multi-scale transform of ``[B, channels, H, W]``: ``num_levels`` levels, the deeper ones nested.

    A level squeezes to ``[4C, H/2, W/2]``, runs ``steps_per_level`` :class:`GlowStep` s, and, but
    for the last level, splits: :func:`split_prior` standardises the second half of the channels,
    which leaves for the latent, and the first half goes on to the next level
    (:class:`~course_pkg.flows.multiscale.FactorOut`). Each level ends by undoing its squeeze, so
    ``z`` has the shape of ``x`` and the split-off numbers sit where the unsqueezes put them.
    ``H`` and ``W`` must be divisible by ``2^num_levels``.
    """
    if num_levels < 1 or steps_per_level < 1:
        raise ValueError(f"Glow needs num_levels >= 1 and steps_per_level >= 1, got {num_levels} and {steps_per_level}")
    squeezed = 4 * channels
    steps = [GlowStep(squeezed, hidden_channels) for _ in range(steps_per_level)]
    if num_levels > 1:
        deeper = glow_levels(squeezed // 2, num_levels - 1, steps_per_level, hidden_channels)
        steps += [split_prior(squeezed), FactorOut(deeper, kept_channels=squeezed // 2)]
    return Sequential(Squeeze(), *steps, Inverse(Squeeze()))

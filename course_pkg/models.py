"""Coupling-flow models: NICE and RealNVP for vectors, a small multi-scale RealNVP for images (chapter 3), Glow (chapter 6).

Each model is a :class:`~course_pkg.distributions.NormalizingFlow`: a ``transform`` (data to
latent, a :class:`~course_pkg.flows.base.Sequential` of the layers below) and a standard normal
``base`` over the latent, which has the shape of the data.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from course_pkg.distributions import NormalizingFlow, StandardNormal
from course_pkg.flows import ActNorm, Affine, Flow, Inverse, Logit, Sequential
from course_pkg.flows.coupling import AffineCoupling, channel_mask, checkerboard_mask
from course_pkg.flows.glow import glow_levels
from course_pkg.flows.multiscale import FactorOut, Squeeze
from course_pkg.flows.split_coupling import SplitAdditiveCoupling, SplitAffineCoupling, SplitCoupling, half_split
from course_pkg.flows.transformers import Additive
from course_pkg.flows.transformers import Affine as AffineTransformer
from course_pkg.nets import MLP, ResNet


def vector_couplings(
    coupling: Callable[[int, int, nn.Module], SplitCoupling],
    params_per_feature: int,
    features: int,
    num_layers: int,
    hidden_features: int,
    num_hidden_layers: int = 2,
) -> list[SplitCoupling]:
    """``num_layers`` couplings of ``[B, features]`` keeping the first half, the second, ...; MLP conditioners.

    Alternating the kept half lets every feature be transformed, conditioned on the others, every
    other layer. ``coupling(features, parity, conditioner)`` builds a layer; each conditioner maps
    the ``d_A`` kept features to ``P d_B`` numbers for the transformed ones
    (``P = params_per_feature``, the transformer's).
    """
    layers = []
    for parity in (k % 2 for k in range(num_layers)):
        kept, transformed = half_split(features, parity)
        conditioner = MLP(kept, params_per_feature * transformed, hidden_features, num_hidden_layers)
        layers.append(coupling(features, parity, conditioner))
    return layers


class NICE(NormalizingFlow):
    """NICE (Dinh, Krueger & Bengio 2015): additive couplings, then a learned diagonal scaling, ``[B, features]``.

    ``z = exp(log_scale) * (g_K o ... o g_1)(x) + shift``: the couplings ``g_k``
    (:class:`~course_pkg.flows.split_coupling.SplitAdditiveCoupling`, alternating halves) are volume
    preserving, so ``log|det dz/dx| = sum_i log_scale_i``, all of it from the last layer (NICE's
    "scaling layer" is :class:`~course_pkg.flows.elementwise.Affine`, whose extra shift is
    volume-preserving too). Base: ``N(0, I)``.
    """

    def __init__(
        self, features: int, num_layers: int = 4, hidden_features: int = 64, num_hidden_layers: int = 2
    ) -> None:
        couplings = vector_couplings(
            SplitAdditiveCoupling, Additive.params_per_feature, features, num_layers, hidden_features, num_hidden_layers
        )
        super().__init__(Sequential(*couplings, Affine(features)), StandardNormal(features))


class RealNVP(NormalizingFlow):
    """RealNVP for vectors ``[B, features]`` (Dinh, Sohl-Dickstein & Bengio 2017): affine couplings, alternating halves.

    ``z = (g_K o ... o g_1)(x)``, ``log|det dz/dx| = sum_k sum_i s_{k,i}``: the couplings ``g_k`` are
    :class:`~course_pkg.flows.split_coupling.SplitAffineCoupling` layers, which keep the first half
    of the features, the second, the first, ... (the mask form with ``half_mask`` and
    ``1 - half_mask``, computed on the halves). With ``actnorm=True``
    an :class:`~course_pkg.flows.elementwise.ActNorm` follows each coupling (initialised on the
    first batch it sees). Starts as the identity: a new model is the base ``N(0, I)``.

    >>> from course_pkg.data import toy_data
    >>> model = RealNVP(2, num_layers=6, hidden_features=64)
    >>> model.log_prob(toy_data("two_moons", 128)).shape
    torch.Size([128])
    """

    def __init__(
        self,
        features: int,
        num_layers: int = 6,
        hidden_features: int = 64,
        num_hidden_layers: int = 2,
        actnorm: bool = False,
    ) -> None:
        layers: list[Flow] = []
        affine = AffineTransformer.params_per_feature
        couplings = vector_couplings(SplitAffineCoupling, affine, features, num_layers, hidden_features, num_hidden_layers)
        for coupling in couplings:
            layers += [coupling, ActNorm(features)] if actnorm else [coupling]
        super().__init__(Sequential(*layers), StandardNormal(features))


class MultiScaleRealNVP(NormalizingFlow):
    """A small multi-scale RealNVP for images ``x`` in ``[0, 1]^(C, H, W)`` (dequantized pixels), ``[B, C, H, W]``.

    ``transform = Logit(alpha)``, then the scales (RealNVP, section 3.6). Each scale but the
    last: 3 checkerboard couplings on ``[C, H, W]``, a :class:`~course_pkg.flows.multiscale.Squeeze`
    to ``[4C, H/2, W/2]``, 3 channel-wise couplings, then :class:`~course_pkg.flows.multiscale.FactorOut`:
    the first ``2C`` channels go on to the next scale, the other ``2C`` go straight to the
    latent. The last scale: 4 checkerboard couplings. Each scale ends by undoing its squeeze, so
    it maps a tensor to one of the same shape, and ``z`` has the shape of ``x``: the base is
    ``N(0, I)`` over ``[C, H, W]``, and the factored-out numbers sit in ``z`` where the unsqueezes
    put them. The conditioners are :class:`~course_pkg.nets.ResNet` networks with
    ``hidden_channels`` and ``num_blocks``.

    ``log p(x)`` is a density on ``[0, 1]^D`` (the logit's log-det included); wrap the model in
    :class:`~course_pkg.preprocessing.DequantizedModel` to train on and report bits per dimension
    of the 8-bit pixels. ``H`` and ``W`` must be divisible by ``2^(num_scales - 1)``; the
    defaults (2 scales, 32 channels, 1 block) fit MNIST and train for a few minutes on a CPU.
    """

    def __init__(
        self,
        shape: tuple[int, int, int] = (1, 28, 28),
        num_scales: int = 2,
        hidden_channels: int = 32,
        num_blocks: int = 1,
        alpha: float = 0.05,
    ) -> None:
        channels, height, width = shape
        factor = 2 ** (num_scales - 1)
        if num_scales < 1 or height % factor or width % factor:
            raise ValueError(
                f"MultiScaleRealNVP with num_scales={num_scales} needs num_scales >= 1 and a height and width "
                f"divisible by {factor}, got shape {tuple(shape)}"
            )

        def conditioner(in_channels: int, out_channels: int) -> nn.Module:
            return ResNet(in_channels, out_channels, hidden_channels, num_blocks)

        transform = Sequential(Logit(alpha), _scale(channels, height, width, num_scales, conditioner))
        super().__init__(transform, StandardNormal(tuple(shape)))


class Glow(NormalizingFlow):
    """Glow (Kingma & Dhariwal 2018) for images ``x`` in ``[0, 1]^(C, H, W)`` (dequantized pixels), ``[B, C, H, W]``.

    ``transform = Logit(alpha)``, then :func:`~course_pkg.flows.glow.glow_levels`: ``num_levels``
    levels of ``steps_per_level`` steps of flow (ActNorm, LU 1x1 convolution, affine coupling with
    :class:`~course_pkg.nets.GlowNet` conditioners ``hidden_channels`` wide), a split with a learned
    prior between levels. ``z`` has the shape of ``x``, under ``N(0, I)``. ``H`` and ``W`` must be
    divisible by ``2^num_levels`` (MNIST's 28: at most 2 levels; CIFAR-10's 32: 3 as in the paper).
    Glow centres the pixels (``x - 1/2``) where this takes the logit of chapter 3; the
    ActNorm after either sets the scale. Wrap it in :class:`~course_pkg.preprocessing.DequantizedModel`
    for bits per dimension of the 8-bit pixels. ``encode`` and ``decode`` map between images and
    latents, for interpolation.
    """

    def __init__(
        self,
        shape: tuple[int, int, int] = (1, 28, 28),
        num_levels: int = 2,
        steps_per_level: int = 8,
        hidden_channels: int = 64,
        alpha: float = 0.05,
    ) -> None:
        channels, height, width = shape
        factor = 2**num_levels
        if height % factor or width % factor:
            raise ValueError(
                f"Glow with num_levels={num_levels} needs a height and width divisible by {factor}, "
                f"got shape {tuple(shape)}"
            )
        transform = Sequential(Logit(alpha), glow_levels(channels, num_levels, steps_per_level, hidden_channels))
        super().__init__(transform, StandardNormal(tuple(shape)))

    def encode(self, x: Tensor) -> Tensor:
        """The latent ``z = f(x)`` of images ``x`` ``[B, C, H, W]`` in ``(0, 1)``."""
        return self.transform(x)[0]

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """The images ``x = f^{-1}(z)`` of latents ``z`` ``[B, C, H, W]``."""
        return self.transform.inverse(z)[0]


Conditioner = Callable[[int, int], nn.Module]
"""Builds a conditioner network from its numbers of input and output channels."""


def _scale(channels: int, height: int, width: int, num_scales: int, conditioner: Conditioner) -> Flow:
    """One scale of :class:`MultiScaleRealNVP` on ``[B, channels, height, width]``, the deeper ones nested inside."""
    if num_scales == 1:
        checkerboards = [checkerboard_mask(height, width, k % 2) for k in range(4)]
        return Sequential(*_image_couplings(checkerboards, channels, conditioner))
    squeezed = 4 * channels
    next_scale = _scale(2 * channels, height // 2, width // 2, num_scales - 1, conditioner)
    return Sequential(
        *_image_couplings([checkerboard_mask(height, width, k % 2) for k in range(3)], channels, conditioner),
        Squeeze(),
        *_image_couplings([channel_mask(squeezed, k % 2) for k in range(3)], squeezed, conditioner),
        FactorOut(next_scale, kept_channels=2 * channels),
        Inverse(Squeeze()),
    )


def _image_couplings(masks: list[Tensor], channels: int, conditioner: Conditioner) -> list[Flow]:
    """Affine couplings of ``[B, channels, H, W]``, one per mask, with conditioners ``channels -> 2 channels``."""
    return [AffineCoupling(mask, conditioner(channels, 2 * channels)) for mask in masks]

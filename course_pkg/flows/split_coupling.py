"""Coupling layers that split the features (or channels) into halves instead of masking them (chapters 3, 6).

The same mathematics as the mask form of :mod:`course_pkg.flows.coupling`, computed on the halves
themselves. With ``x = (x_A, x_B)`` split along dimension 1 (``x_A`` kept, ``x_B`` transformed):

    z_A = x_A,    z_B = tau(x_B; conditioner(x_A)),    z = (z_A, z_B) in the places of x,
    log|det dz/dx| = sum_i log|tau'(x_B,i)|,

with ``tau`` a transformer of :mod:`course_pkg.flows.transformers` (RealNVP's affine map:
``z_B = x_B * exp(s(x_A)) + t(x_A)``). Dimension 1 holds the features of vectors ``[B, D]`` and
the channels of images ``[B, C, H, W]`` (Glow's coupling). The conditioner reads only the ``d_A``
kept features and returns numbers for the ``d_B`` transformed ones (``d_A -> P d_B``), where the
mask form feeds it all ``D`` features, masked, and discards part of its ``P D`` outputs. Nothing
is multiplied by a mask: the layer costs about half as much. ``parity`` picks the kept half: 0
keeps the first ``D // 2`` features (the mask form with
:func:`~course_pkg.flows.coupling.half_mask`, or :func:`~course_pkg.flows.coupling.channel_mask`
for images), 1 keeps the others (``1 - half_mask``).

Direction as in :class:`~course_pkg.flows.base.Flow`: ``forward`` maps data ``x`` to latent ``z``
and returns ``log|det dz/dx|``; ``inverse`` maps back and returns ``log|det dx/dz|``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from course_pkg.flows._inputs import expect_at_least_two, expect_input, expect_parity, expect_scale_bound
from course_pkg.flows.coupling import BaseCoupling, half_mask
from course_pkg.flows.transformers import Additive, Affine, Transformer


def half_split(features: int, parity: int) -> tuple[int, int]:
    """``(d_A, d_B)``: how many features a split coupling of ``parity`` keeps and how many it transforms."""
    expect_at_least_two("half_split", "features", features)
    expect_parity("half_split", parity)
    first = features // 2
    return (first, features - first) if parity == 0 else (features - first, first)


class SplitCoupling(BaseCoupling):
    """Coupling by halves of dimension 1: ``z_A = x_A``, ``z_B = tau(x_B; conditioner(x_A))``.

    ``z`` puts ``z_B`` back where ``x_B`` was; ``log|det dz/dx|`` sums the transformer's
    log-derivatives over ``x_B``. Vectors ``[B, D]`` with ``features = D``, or images
    ``[B, C, H, W]`` with ``features = C`` (a split of the channels). The conditioner maps
    ``[B, d_A]`` to ``[B, P d_B]`` (images: ``[B, d_A, H, W]`` to ``[B, P d_B, H, W]``), with
    ``P = transformer.params_per_feature`` and ``(d_A, d_B) = half_split(features, parity)``, in
    the layout of :class:`~course_pkg.flows.coupling.BaseCoupling`.

    >>> from course_pkg.nets import ResNet
    >>> layer = SplitCoupling(4, parity=1, conditioner=ResNet(2, 2 * 2, hidden_channels=8), transformer=Affine())
    >>> x = torch.randn(3, 4, 5, 5)
    >>> z, log_det = layer(x)
    >>> bool(torch.equal(z, x)), log_det.shape  # new: the identity
    (True, torch.Size([3]))
    """

    def __init__(self, features: int, parity: int, conditioner: nn.Module, transformer: Transformer) -> None:
        super().__init__(conditioner, transformer)
        self.kept_features, self.transformed_features = half_split(features, parity)
        self.features, self.parity = features, parity
        self.halves = (features // 2, features - features // 2)  # the sizes of x[:, :D // 2] and of the rest

    @property
    def mask(self) -> Tensor:
        """``[D]``: the mask along dimension 1 of the equivalent mask-form coupling, 1 on the kept features."""
        mask = half_mask(self.features)
        return mask if self.parity == 0 else 1 - mask

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_A, x_B)``, views of ``x``."""
        if x.dim() not in (2, 4) or x.shape[1] != self.features:
            expect_input(x, self._name(), dims=(2, 4), size=self.features)
        first, second = x.split(self.halves, dim=1)
        return (first, second) if self.parity == 0 else (second, first)

    def _merge(self, kept: Tensor, transformed: Tensor) -> Tensor:
        """The halves back in their places."""
        return torch.cat((kept, transformed) if self.parity == 0 else (transformed, kept), dim=1)

    def extra_repr(self) -> str:
        return f"features={self.features}, parity={self.parity}"


class SplitAdditiveCoupling(SplitCoupling):
    """NICE's additive coupling on halves: ``z_B = x_B + t(x_A)``, ``log|det dz/dx| = 0``.

    ``SplitCoupling(features, parity, conditioner, Additive())``: the conditioner maps ``[B, d_A]``
    to the shift ``[B, d_B]``.
    """

    def __init__(self, features: int, parity: int, conditioner: nn.Module) -> None:
        super().__init__(features, parity, conditioner, Additive())


class SplitAffineCoupling(SplitCoupling):
    """RealNVP's affine coupling on halves: ``z_B = x_B * exp(s) + t``, ``log|det dz/dx| = sum_i s_i``.

    ``SplitCoupling(features, parity, conditioner, Affine(scale_bound))``: the conditioner maps
    ``[B, d_A]`` to ``[raw_s, t]`` ``[B, 2 d_B]`` and the log-scale is soft-clipped,
    ``s = scale_bound * tanh(raw_s / scale_bound)``. The inverse is ``x_B = (z_B - t) * exp(-s)``.
    With the conditioner's last layer zero-initialised (as in :mod:`course_pkg.nets`), a new layer
    is exactly the identity.

    >>> from course_pkg.nets import MLP
    >>> layer = SplitAffineCoupling(4, parity=0, conditioner=MLP(2, 2 * 2, hidden_features=16))
    >>> x = torch.randn(8, 4)
    >>> z, log_det = layer(x)
    >>> bool(torch.equal(z, x)), bool(torch.equal(log_det, torch.zeros(8)))  # new: the identity
    (True, True)
    """

    def __init__(self, features: int, parity: int, conditioner: nn.Module, scale_bound: float = 3.0) -> None:
        expect_scale_bound(type(self).__name__, scale_bound)
        super().__init__(features, parity, conditioner, Affine(scale_bound))

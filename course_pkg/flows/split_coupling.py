"""Coupling layers for vectors that split the features into halves instead of masking them (chapter 3).

The same mathematics as the mask form of :mod:`course_pkg.flows.coupling`, computed on the halves
themselves. With ``x = (x_A, x_B)`` split along the features (``x_A`` kept, ``x_B`` transformed):

    z_A = x_A,    z_B = x_B * exp(s(x_A)) + t(x_A),    z = (z_A, z_B) in the places of x,
    log|det dz/dx| = sum_i s_i(x_A).

The conditioner reads only the ``d_A`` kept features and returns numbers for the ``d_B``
transformed ones (``d_A -> 2 d_B``), where the mask form feeds it all ``D`` features, masked, and
discards half of its ``2 D`` outputs. Nothing is multiplied by a mask: the layer costs about half
as much. ``parity`` picks the kept half: 0 keeps the first ``D // 2`` features (the mask form with
:func:`~course_pkg.flows.coupling.half_mask`), 1 keeps the others (``1 - half_mask``).

Direction as in :class:`~course_pkg.flows.base.Flow`: ``forward`` maps data ``x`` to latent ``z``
and returns ``log|det dz/dx|``; ``inverse`` maps back and returns ``log|det dx/dz|``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from course_pkg.flows._inputs import expect_at_least_two, expect_input, expect_parity, expect_scale_bound
from course_pkg.flows.base import Flow
from course_pkg.flows.coupling import affine_log_scale_and_shift, half_mask


def half_split(features: int, parity: int) -> tuple[int, int]:
    """``(d_A, d_B)``: how many features a split coupling of ``parity`` keeps and how many it transforms."""
    expect_at_least_two("half_split", "features", features)
    expect_parity("half_split", parity)
    first = features // 2
    return (first, features - first) if parity == 0 else (features - first, first)


class SplitCoupling(Flow):
    """Coupling of vectors ``[B, D]``: the kept half ``x_A`` passes unchanged and sets a map of the other, ``x_B``.

    ``z_A = x_A``, ``(z_B, log_det) = transform(x_B, conditioner(x_A))`` (the subclasses
    :class:`SplitAdditiveCoupling` and :class:`SplitAffineCoupling` differ only there), and ``z``
    puts ``z_B`` back where ``x_B`` was. The conditioner maps ``[B, d_A]`` to ``[B, k d_B]`` with
    ``k = conditioner_multiplier`` and ``(d_A, d_B) = half_split(D, parity)``.
    """

    conditioner_multiplier: int = 1
    """How many numbers the conditioner returns per transformed feature (stacked along dimension 1)."""

    def __init__(self, features: int, parity: int, conditioner: nn.Module) -> None:
        super().__init__()
        self.kept_features, self.transformed_features = half_split(features, parity)
        self.features, self.parity = features, parity
        self.halves = (features // 2, features - features // 2)  # the sizes of x[:, :D // 2] and of the rest
        self.conditioner = conditioner

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_kept, x_transformed = self._split(x)
        z_transformed, log_det = self.transform(x_transformed, self._conditioner(x_kept))
        return self._merge(x_kept, z_transformed), log_det

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        z_kept, z_transformed = self._split(z)  # z_A == x_A: the same conditioner input
        x_transformed, log_det = self.inverse_transform(z_transformed, self._conditioner(z_kept))
        return self._merge(z_kept, x_transformed), log_det

    def transform(self, x_transformed: Tensor, conditioner_output: Tensor) -> tuple[Tensor, Tensor]:
        """``(z_B [B, d_B], log|det dz/dx| [B])`` from ``x_B`` and the conditioner's output."""
        raise NotImplementedError

    def inverse_transform(self, z_transformed: Tensor, conditioner_output: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_B [B, d_B], log|det dx/dz| [B])`` from ``z_B`` and the conditioner's output."""
        raise NotImplementedError

    @property
    def mask(self) -> Tensor:
        """``[D]``: the mask of the equivalent mask-form coupling, 1 on the kept features."""
        mask = half_mask(self.features)
        return mask if self.parity == 0 else 1 - mask

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_A, x_B)``, views of ``x`` ``[B, D]``."""
        if x.dim() != 2 or x.shape[1] != self.features:
            expect_input(x, self._name(), dims=(2,), size=self.features)
        first, second = x.split(self.halves, dim=1)
        return (first, second) if self.parity == 0 else (second, first)

    def _merge(self, kept: Tensor, transformed: Tensor) -> Tensor:
        """The halves back in their places: ``[B, D]``."""
        return torch.cat((kept, transformed) if self.parity == 0 else (transformed, kept), dim=1)

    def _conditioner(self, kept: Tensor) -> Tensor:
        output = self.conditioner(kept)
        expected = (kept.shape[0], self.conditioner_multiplier * self.transformed_features)
        if output.shape != expected:
            raise ValueError(
                f"{self._name()}: the conditioner should map the {self.kept_features} kept features to "
                f"{self.conditioner_multiplier} number(s) per transformed feature, shape {expected}, got "
                f"{tuple(output.shape)}"
            )
        return output

    def extra_repr(self) -> str:
        return f"features={self.features}, parity={self.parity}"

    def _name(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class SplitAdditiveCoupling(SplitCoupling):
    """NICE's additive coupling on halves: ``z_B = x_B + t(x_A)``, ``log|det dz/dx| = 0``.

    The conditioner maps ``[B, d_A]`` to the shift ``[B, d_B]``.
    """

    conditioner_multiplier = 1

    def transform(self, x_transformed: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
        return x_transformed + shift, shift.new_zeros(shift.shape[0])

    def inverse_transform(self, z_transformed: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
        return z_transformed - shift, shift.new_zeros(shift.shape[0])


class SplitAffineCoupling(SplitCoupling):
    """RealNVP's affine coupling on halves: ``z_B = x_B * exp(s) + t``, ``log|det dz/dx| = sum_i s_i``.

    The conditioner maps ``[B, d_A]`` to ``[raw_s, t]`` ``[B, 2 d_B]`` and the log-scale is
    soft-clipped as in :class:`~course_pkg.flows.coupling.AffineCoupling`,
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

    conditioner_multiplier = 2

    def __init__(self, features: int, parity: int, conditioner: nn.Module, scale_bound: float = 3.0) -> None:
        super().__init__(features, parity, conditioner)
        expect_scale_bound(type(self).__name__, scale_bound)
        self.scale_bound = float(scale_bound)

    def transform(self, x_transformed: Tensor, conditioner_output: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = affine_log_scale_and_shift(conditioner_output, self.scale_bound)
        return torch.addcmul(shift, x_transformed, torch.exp(log_scale)), log_scale.sum(dim=1)

    def inverse_transform(self, z_transformed: Tensor, conditioner_output: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = affine_log_scale_and_shift(conditioner_output, self.scale_bound)
        return (z_transformed - shift) * torch.exp(-log_scale), -log_scale.sum(dim=1)

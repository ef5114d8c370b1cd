"""The two moves of RealNVP's multi-scale architecture (Dinh et al. 2017, section 3.6): squeeze and factor out.

Both move numbers around without changing them, so they cost nothing in the log-determinant; the
multi-scale model of :mod:`course_pkg.models` (and Glow in chapter 6) is built from them and
coupling layers.

Direction as in :class:`~course_pkg.flows.base.Flow`: ``forward`` maps data ``x`` to latent ``z``
and returns ``log|det dz/dx|``; ``inverse`` maps back and returns ``log|det dx/dz|``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from course_pkg.flows._inputs import expect_input
from course_pkg.flows.base import Flow


class Squeeze(Flow):
    """Trade space for channels: ``[B, C, H, W] -> [B, 4 C, H / 2, W / 2]``, each 2x2 block of pixels into 4 channels.

    ``z[b, 4 c + 2 i + j, h, w] = x[b, c, 2 h + i, 2 w + j]`` for ``i, j`` in ``{0, 1}``
    (``pixel_unshuffle``). A permutation of the numbers, so ``log_det = 0``. ``H`` and ``W`` must
    be even; the inverse needs a channel count divisible by 4. ``Inverse(Squeeze())`` undoes it.
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        expect_input(x, "Squeeze", dims=(4,))
        if x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(f"Squeeze needs an even height and width, got shape {tuple(x.shape)}")
        return F.pixel_unshuffle(x, 2), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        expect_input(z, "Squeeze.inverse", dims=(4,))
        if z.shape[1] % 4:
            raise ValueError(f"Squeeze.inverse needs a channel count divisible by 4, got shape {tuple(z.shape)}")
        return F.pixel_shuffle(z, 2), z.new_zeros(z.shape[0])


class FactorOut(Flow):
    """Multi-scale step: the first ``kept_channels`` channels go on through ``flow``, the rest straight to the latent.

    With ``x = [x_kept, x_out]`` split along dimension 1, ``z = [flow(x_kept), x_out]`` and
    ``log|det dz/dx| = log|det d flow(x_kept) / d x_kept|`` (the Jacobian is block diagonal with an
    identity block). ``x`` is ``[B, C, H, W]`` (or ``[B, C]``) with ``C > kept_channels``; ``flow``
    must keep the shape of ``x_kept``, and ``z`` has the shape of ``x``. Later layers never touch
    ``x_out``: half the numbers of a RealNVP leave after each scale, which is what makes the deep
    scales cheap.
    """

    def __init__(self, flow: Flow, kept_channels: int) -> None:
        super().__init__()
        if kept_channels < 1:
            raise ValueError(f"FactorOut needs kept_channels >= 1, got {kept_channels}")
        self.flow = flow
        self.kept_channels = kept_channels

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._through(x, "forward")

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._through(z, "inverse")

    def _through(self, x: Tensor, method: str) -> tuple[Tensor, Tensor]:
        """Run ``flow.forward`` or ``flow.inverse`` on the kept channels; the others pass unchanged."""
        name = f"FactorOut(kept_channels={self.kept_channels})" + (".inverse" if method == "inverse" else "")
        expect_input(x, name, dims=(2, 4))
        if x.shape[1] <= self.kept_channels:
            raise ValueError(f"{name} needs more than {self.kept_channels} channels, got shape {tuple(x.shape)}")
        kept, factored = x[:, : self.kept_channels], x[:, self.kept_channels :]
        kept_out, log_det = getattr(self.flow, method)(kept)
        return torch.cat([kept_out, factored], dim=1), log_det

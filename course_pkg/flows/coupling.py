"""Coupling flows (chapter 3): NICE's additive and RealNVP's affine coupling, and the masks that split the features.

A coupling layer splits the features with a binary ``mask``. The features with ``mask == 1`` pass
unchanged and are the input of a network, the *conditioner*; its output sets an elementwise affine
map of the other features (``mask == 0``):

    z = mask * x + (1 - mask) * (x * exp(s(mask * x)) + t(mask * x)),
    log|det dz/dx| = sum over the features with mask == 0 of s.

The Jacobian is block triangular (the unchanged features do not depend on the others, and each
transformed feature depends on itself only through its own scale), so its log-determinant is the
sum of the log-scales, whatever the conditioner: any network works, and it is never inverted.
The inverse reads the conditioner's input from ``z`` (``mask * z == mask * x``):
``x = mask * z + (1 - mask) * (z - t) * exp(-s)``.

Direction as in :class:`~course_pkg.flows.base.Flow`: ``forward`` maps data ``x`` to latent ``z``
and returns ``log|det dz/dx|``; ``inverse`` maps back and returns ``log|det dx/dz|``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from course_pkg.flows._inputs import expect_at_least_two, expect_input, expect_parity, expect_scale_bound
from course_pkg.flows.base import Flow, sum_except_batch

# ---------------------------------------------------------------------------- masks


def half_mask(features: int) -> Tensor:
    """``[features]`` mask: 1 on the first ``features // 2`` features, 0 on the rest (NICE's split)."""
    expect_at_least_two("half_mask", "features", features)
    mask = torch.zeros(features)
    mask[: features // 2] = 1
    return mask


def alternating_mask(features: int, parity: int = 0) -> Tensor:
    """``[features]`` mask: ``mask[i] = 1`` exactly where ``i % 2 == parity`` (the even or the odd features)."""
    expect_at_least_two("alternating_mask", "features", features)
    expect_parity("alternating_mask", parity)
    return (torch.arange(features) % 2 == parity).float()


def checkerboard_mask(height: int, width: int, parity: int = 0) -> Tensor:
    """``[height, width]`` mask: ``mask[i, j] = 1`` exactly where ``(i + j) % 2 == parity`` (RealNVP, section 3.4).

    It broadcasts against images ``[B, C, height, width]``: the same pattern in every channel.
    """
    if height < 1 or width < 1:
        raise ValueError(f"checkerboard_mask needs a positive height and width, got {height} x {width}")
    expect_parity("checkerboard_mask", parity)
    rows, columns = torch.arange(height).reshape(-1, 1), torch.arange(width).reshape(1, -1)
    return ((rows + columns) % 2 == parity).float()


def channel_mask(channels: int, parity: int = 0) -> Tensor:
    """``[channels, 1, 1]`` mask: 1 on the first ``channels // 2`` channels (parity 0) or on the rest (parity 1).

    RealNVP's channel-wise mask, used after a squeeze; it broadcasts against ``[B, channels, H, W]``.
    """
    expect_at_least_two("channel_mask", "channels", channels)
    expect_parity("channel_mask", parity)
    mask = half_mask(channels)
    return (mask if parity == 0 else 1 - mask).reshape(channels, 1, 1)


# ---------------------------------------------------------------------------- coupling layers


class Coupling(Flow):
    """Coupling layer: ``mask == 1`` features pass unchanged and set an elementwise affine map of the others.

    ``z = x * exp(s) + t`` with ``s = (1 - mask) * log_scale``, ``t = (1 - mask) * shift``, where
    ``(log_scale, shift)`` are read from ``conditioner(mask * x)`` by :meth:`log_scale_and_shift`
    (the subclasses :class:`AdditiveCoupling` and :class:`AffineCoupling` differ only there);
    ``log|det dz/dx| = sum_i s_i``. Zeroing ``s`` and ``t`` on the masked features makes them
    pass through exactly, whatever the conditioner returns there.

    Shapes: vectors ``x`` ``[B, D]`` with a mask ``[D]``, or images ``x`` ``[B, C, H, W]`` with a
    mask that broadcasts against one image: ``[C, H, W]``, ``[H, W]`` or ``[1, H, W]`` (a
    checkerboard), ``[C, 1, 1]`` (channel-wise). The conditioner maps ``[B, D]`` to
    ``[B, k D]`` (images: ``[B, C, H, W]`` to ``[B, k C, H, W]``) with ``k = conditioner_multiplier``.
    The mask is a buffer: it follows the layer's device and dtype.
    """

    conditioner_multiplier: int = 1
    """How many numbers the conditioner returns per feature (stacked along dimension 1)."""

    def __init__(self, mask: Tensor, conditioner: nn.Module) -> None:
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.get_default_dtype()).clone()
        if mask.dim() not in (1, 2, 3):
            raise ValueError(
                f"{type(self).__name__} takes a mask [features] for vectors or [channels, height, width] "
                f"(or a shape that broadcasts to it) for images, got shape {tuple(mask.shape)}"
            )
        if not ((mask == 0) | (mask == 1)).all():
            values = mask.unique().tolist()
            raise ValueError(f"{type(self).__name__} needs a mask of zeros and ones, got values {values}")
        self.register_buffer("mask", mask)
        self.register_buffer("others", 1 - mask, persistent=False)  # the transformed features
        self.conditioner = conditioner

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._masked_log_scale_and_shift(x)
        z = x * torch.exp(log_scale) + shift
        return z, sum_except_batch(log_scale)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._masked_log_scale_and_shift(z)  # mask * z == mask * x: the same conditioner input
        x = (z - shift) * torch.exp(-log_scale)
        return x, -sum_except_batch(log_scale)

    def log_scale_and_shift(self, conditioner_output: Tensor) -> tuple[Tensor, Tensor]:
        """``(log_scale, shift)``, each of the input's shape, from the conditioner's output."""
        raise NotImplementedError

    def _masked_log_scale_and_shift(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``s`` and ``t`` of the docstring: the conditioner's map of ``mask * x``, zeroed where ``mask == 1``."""
        self._expect(x)
        conditioner_output = self.conditioner(self.mask * x)
        expected = (x.shape[0], self.conditioner_multiplier * x.shape[1], *x.shape[2:])
        if tuple(conditioner_output.shape) != expected:
            raise ValueError(
                f"{self._name()}: the conditioner should return shape {expected} for input of shape "
                f"{tuple(x.shape)} ({self.conditioner_multiplier} number(s) per feature, stacked along "
                f"dimension 1), got {tuple(conditioner_output.shape)}"
            )
        log_scale, shift = self.log_scale_and_shift(conditioner_output)
        return self.others * log_scale, self.others * shift

    def _expect(self, x: Tensor) -> None:
        if self.mask.dim() == 1 and x.dim() == 2 and x.shape[1] == self.mask.numel():
            return  # the common case, checked without building an error message
        if self.mask.dim() == 1:
            expect_input(x, self._name(), dims=(2,), size=self.mask.numel())
            return
        expect_input(x, self._name(), dims=(4,))
        if not _broadcasts_to(self.mask.shape, x.shape[1:]):
            raise ValueError(
                f"{self._name()} expects images [batch, channels, height, width] that the mask of shape "
                f"{tuple(self.mask.shape)} broadcasts against, got shape {tuple(x.shape)}"
            )

    def _name(self) -> str:
        return f"{type(self).__name__}(mask of shape {tuple(self.mask.shape)})"


class AdditiveCoupling(Coupling):
    """NICE's additive coupling (Dinh, Krueger & Bengio 2015): ``z = x + (1 - mask) * t(mask * x)``.

    A :class:`Coupling` with ``s = 0``: volume preserving, ``log|det dz/dx| = 0``. The conditioner
    returns the shift ``t``, of the input's shape (``[B, D]`` or ``[B, C, H, W]``). Stack a few
    with alternating masks, then a learned diagonal scaling (NICE's last layer,
    :class:`~course_pkg.flows.elementwise.Affine`), which is where the model's volume change lives.
    """

    conditioner_multiplier = 1

    def log_scale_and_shift(self, conditioner_output: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(conditioner_output), conditioner_output


class AffineCoupling(Coupling):
    """RealNVP's affine coupling (Dinh, Sohl-Dickstein & Bengio 2017): ``z = mask * x + (1 - mask) * (x * exp(s) + t)``.

    The conditioner returns ``[raw_s, t]`` stacked along dimension 1 (``[B, 2 D]`` or
    ``[B, 2 C, H, W]``), and the log-scale is soft-clipped,
    ``s = scale_bound * tanh(raw_s / scale_bound)``: ``|s| < scale_bound`` so ``exp(s)`` can
    neither overflow nor vanish, and ``s ~ raw_s`` for small values. ``log|det dz/dx| = sum_i s_i``
    over the features with ``mask == 0``. With the conditioner's last layer zero-initialised (as in
    :mod:`course_pkg.nets`), a new layer is exactly the identity.

    >>> from course_pkg.nets import MLP
    >>> layer = AffineCoupling(alternating_mask(4), MLP(4, 2 * 4, hidden_features=16))
    >>> x = torch.randn(8, 4)
    >>> z, log_det = layer(x)
    >>> bool(torch.equal(z, x)), bool(torch.equal(log_det, torch.zeros(8)))  # new: the identity
    (True, True)
    """

    conditioner_multiplier = 2

    def __init__(self, mask: Tensor, conditioner: nn.Module, scale_bound: float = 3.0) -> None:
        super().__init__(mask, conditioner)
        expect_scale_bound(type(self).__name__, scale_bound)
        self.scale_bound = float(scale_bound)

    def log_scale_and_shift(self, conditioner_output: Tensor) -> tuple[Tensor, Tensor]:
        return affine_log_scale_and_shift(conditioner_output, self.scale_bound)


def affine_log_scale_and_shift(conditioner_output: Tensor, scale_bound: float) -> tuple[Tensor, Tensor]:
    """RealNVP's ``(s, t)`` from a conditioner output ``[raw_s, t]`` stacked along dimension 1.

    ``s = scale_bound * tanh(raw_s / scale_bound)``: ``|s| < scale_bound``, and ``s ~ raw_s`` for
    small values. ``[B, 2 k, ...]`` in, two ``[B, k, ...]`` out. Shared by :class:`AffineCoupling`
    and :class:`~course_pkg.flows.split_coupling.SplitAffineCoupling`. (tanh, not the equal
    ``2 sigmoid(2 y) - 1``, which loses the precision of small ``s`` for large bounds.)
    """
    raw_log_scale, shift = conditioner_output.chunk(2, dim=1)
    return scale_bound * torch.tanh(raw_log_scale / scale_bound), shift


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    """Whether a tensor of ``shape`` broadcasts to exactly ``target`` (and not to something larger)."""
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False

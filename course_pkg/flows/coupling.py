"""Coupling flows (chapters 3 and 6): one coupling layer, the masks that split the features, NICE and RealNVP.

A coupling layer splits the features with a binary ``mask``. The features with ``mask == 1``
pass unchanged and are the input of a network, the *conditioner*; its output sets, per feature,
the parameters of an elementwise monotone map, the *transformer*
(:mod:`course_pkg.flows.transformers`), of the other features (``mask == 0``):

    z = mask * x + (1 - mask) * tau(x; conditioner(mask * x)),
    log|det dz/dx| = sum over the features with mask == 0 of log|tau'(x_i)|.

The Jacobian is block triangular (the unchanged features do not depend on the others, and each
transformed feature depends on itself only through its own ``tau``), so its log-determinant is
the sum of the transformer's elementwise log-derivatives, whatever the conditioner: any network
works, and it is never inverted. The inverse reads the conditioner's input from ``z``
(``mask * z == mask * x``) and inverts ``tau``. NICE is this layer with
:class:`~course_pkg.flows.transformers.Additive` (``tau = x + t``), RealNVP with
:class:`~course_pkg.flows.transformers.Affine` (``tau = x exp(s) + t``).

Direction as in :class:`~course_pkg.flows.base.Flow`: ``forward`` maps data ``x`` to latent ``z``
and returns ``log|det dz/dx|``; ``inverse`` maps back and returns ``log|det dx/dz|``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from course_pkg.flows._inputs import expect_at_least_two, expect_input, expect_parity, expect_scale_bound
from course_pkg.flows.base import Flow, sum_except_batch
from course_pkg.flows.transformers import Additive, Affine, Transformer, expect_transformer, params_from_blocks

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


class BaseCoupling(Flow):
    """What every coupling layer does: split, condition, transform, merge (the one place that writes it).

    ``(kept, transformed) = split(x)``; ``params = conditioner(kept)``, read as ``P`` numbers per
    transformed feature (``P = transformer.params_per_feature``); ``(y, ladj) = tau(transformed;
    params)``; ``z = merge(kept, y)`` and ``log_det`` sums ``ladj`` over the transformed features.
    The inverse does the same with ``tau^{-1}``: the kept part of ``z`` is the kept part of ``x``.
    :class:`Coupling` splits with a mask, :class:`~course_pkg.flows.split_coupling.SplitCoupling`
    by slicing dimension 1.

    The conditioner returns its ``P`` numbers per feature as ``P`` blocks stacked along dimension 1:
    ``[B, P F]`` for ``F`` transformed features (images: ``[B, P C, H, W]``), block ``p`` holding
    parameter ``p`` of every feature (RealNVP's ``[raw_s, t]``). The layer hands the transformer
    these numbers as ``params`` of shape ``transformed.shape + (P,)``.
    """

    def __init__(self, conditioner: nn.Module, transformer: Transformer) -> None:
        super().__init__()
        expect_transformer(type(self).__name__, transformer)
        self.conditioner = conditioner
        self.transformer = transformer

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._couple(x, self.transformer.forward)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._couple(z, self.transformer.inverse)

    def _couple(self, x: Tensor, transform: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        kept, transformed = self._split(x)
        params = self._params(self.conditioner(kept), transformed)
        y, ladj = transform(transformed, params)
        return self._merge(kept, y), sum_except_batch(self._on_transformed(ladj))

    def _params(self, conditioner_output: Tensor, transformed: Tensor) -> Tensor:
        """The conditioner's ``P`` blocks along dimension 1 as ``params``, ``transformed.shape + (P,)`` (a view)."""
        count, features = self.transformer.params_per_feature, transformed.shape[1]
        expected = (transformed.shape[0], count * features, *transformed.shape[2:])
        if conditioner_output.shape != expected:
            raise ValueError(
                f"{self._name()}: the conditioner should return shape {expected} for the "
                f"{type(self.transformer).__name__} transformer ({count} number(s) per transformed feature, "
                f"stacked along dimension 1), got {tuple(conditioner_output.shape)}"
            )
        return params_from_blocks(conditioner_output, count)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(kept, transformed)``: the conditioner's input and the part the transformer maps."""
        raise NotImplementedError

    def _merge(self, kept: Tensor, y: Tensor) -> Tensor:
        """The output, of the input's shape, from the kept part and the transformed one."""
        raise NotImplementedError

    def _on_transformed(self, ladj: Tensor) -> Tensor:
        """``ladj`` where a feature is transformed, 0 elsewhere."""
        return ladj

    def _name(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class Coupling(BaseCoupling):
    """Coupling by a mask: ``z = mask * x + (1 - mask) * tau(x; conditioner(mask * x))``.

    ``log|det dz/dx| = sum_i (1 - mask_i) log|tau'(x_i)|``. The transformer is applied to every
    feature and its output kept only where ``mask == 0``, so the features with ``mask == 1`` pass
    through exactly, whatever the conditioner returns there.

    Shapes: vectors ``x`` ``[B, D]`` with a mask ``[D]``, or images ``x`` ``[B, C, H, W]`` with a
    mask that broadcasts against one image: ``[C, H, W]``, ``[H, W]`` or ``[1, H, W]`` (a
    checkerboard), ``[C, 1, 1]`` (channel-wise). The conditioner maps ``[B, D]`` to ``[B, P D]``
    (images: ``[B, C, H, W]`` to ``[B, P C, H, W]``), ``P = transformer.params_per_feature``, in
    the layout of :class:`BaseCoupling`. The mask is a buffer: it follows the layer's device and
    dtype.

    >>> from course_pkg.flows.transformers import Affine
    >>> from course_pkg.nets import MLP
    >>> layer = Coupling(alternating_mask(4), MLP(4, 2 * 4, hidden_features=16), Affine())
    >>> x = torch.randn(8, 4)
    >>> z, log_det = layer(x)
    >>> bool(torch.equal(z, x)), bool(torch.equal(log_det, torch.zeros(8)))  # new: the identity
    (True, True)
    """

    def __init__(self, mask: Tensor, conditioner: nn.Module, transformer: Transformer) -> None:
        super().__init__(conditioner, transformer)
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
        self.register_buffer("keeps", mask.bool(), persistent=False)  # the features that pass unchanged

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._expect(x)
        return self.mask * x, x

    def _merge(self, kept: Tensor, y: Tensor) -> Tensor:
        return torch.where(self.keeps, kept, y)  # kept == x where mask == 1

    def _on_transformed(self, ladj: Tensor) -> Tensor:
        return torch.where(self.keeps, 0.0, ladj)

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

    ``Coupling(mask, conditioner, Additive())``: volume preserving, ``log|det dz/dx| = 0``. The
    conditioner returns the shift ``t``, of the input's shape (``[B, D]`` or ``[B, C, H, W]``).
    Stack a few with alternating masks, then a learned diagonal scaling (NICE's last layer,
    :class:`~course_pkg.flows.elementwise.Affine`), which is where the model's volume change lives.
    """

    def __init__(self, mask: Tensor, conditioner: nn.Module) -> None:
        super().__init__(mask, conditioner, Additive())


class AffineCoupling(Coupling):
    """RealNVP's affine coupling (Dinh, Sohl-Dickstein & Bengio 2017): ``z = mask * x + (1 - mask) * (x * exp(s) + t)``.

    ``Coupling(mask, conditioner, Affine(scale_bound))``. The conditioner returns ``[raw_s, t]``
    stacked along dimension 1 (``[B, 2 D]`` or ``[B, 2 C, H, W]``), and the log-scale is
    soft-clipped, ``s = scale_bound * tanh(raw_s / scale_bound)``: ``|s| < scale_bound`` so
    ``exp(s)`` can neither overflow nor vanish, and ``s ~ raw_s`` for small values.
    ``log|det dz/dx| = sum_i s_i`` over the features with ``mask == 0``. With the conditioner's
    last layer zero-initialised (as in :mod:`course_pkg.nets`), a new layer is exactly the identity.

    >>> from course_pkg.nets import MLP
    >>> layer = AffineCoupling(alternating_mask(4), MLP(4, 2 * 4, hidden_features=16))
    >>> x = torch.randn(8, 4)
    >>> z, log_det = layer(x)
    >>> bool(torch.equal(z, x)), bool(torch.equal(log_det, torch.zeros(8)))  # new: the identity
    (True, True)
    """

    def __init__(self, mask: Tensor, conditioner: nn.Module, scale_bound: float = 3.0) -> None:
        expect_scale_bound(type(self).__name__, scale_bound)
        super().__init__(mask, conditioner, Affine(scale_bound))


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    """Whether a tensor of ``shape`` broadcasts to exactly ``target`` (and not to something larger)."""
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False

"""Autoregressive flows (chapter 4): MADE's masks and degrees, and the masked autoregressive layer (MAF; IAF = Inverse).

An autoregressive layer transforms feature ``i`` with numbers that depend only on the features
before it in an order ``pi``:

    z_i = tau(x_i; c_i(x_{<i})),    log|det dz/dx| = sum_i log|tau'(x_i)|,

so its Jacobian is triangular once the features are listed in that order, and the log-det is the
sum of the transformer's elementwise log-derivatives (:mod:`course_pkg.flows.transformers`).
MADE (Germain, Gregor, Murray & Larochelle 2015) computes every ``c_i`` in *one* pass of a
network whose weights are masked: feature ``i`` gets a degree ``m(i)`` (its position in ``pi``,
from 1), every hidden unit ``k`` a degree ``m(k)``, and a weight is kept only where

    hidden unit k <- input j  if m(k) >= m(j),    output i <- hidden unit k  if m(i) > m(k).

So the density direction ``x -> z`` (MAF, Papamakarios, Pavlakou & Murray 2017) is one pass, and
its inverse ``z -> x`` needs ``D`` passes, one feature after the other. IAF (Kingma et al. 2016)
is the same layer the other way round, ``Inverse(MaskedAutoregressive(...))``: sampling in one
pass, density in ``D``. Between layers put a :class:`~course_pkg.flows.linear.Permutation` (or give
each layer its own order) so that every feature comes early somewhere.

Direction as in :class:`~course_pkg.flows.base.Flow`: ``forward`` maps data ``x`` to latent ``z``
and returns ``log|det dz/dx|``; ``inverse`` maps back and returns ``log|det dx/dz|``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from course_pkg.flows._inputs import expect_context, expect_hidden_features, expect_input
from course_pkg.flows.base import Flow
from course_pkg.flows.transformers import Transformer, expect_transformer, params_from_blocks

Order = str | Sequence[int] | Tensor


def autoregressive_order(features: int, order: Order = "natural", seed: int | None = None) -> Tensor:
    """The features in the order they are generated, a ``[features]`` permutation (long).

    ``"natural"`` is ``0, 1, ..., D - 1``, ``"reversed"`` is ``D - 1, ..., 0``, ``"random"`` a
    uniformly random permutation (reproducible when ``seed`` is given); a sequence is taken as the
    order itself: ``[2, 0, 1]`` generates feature 2 first.
    """
    if features < 1:
        raise ValueError(f"an autoregressive order needs at least 1 feature, got {features}")
    if isinstance(order, str):
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        orders = {
            "natural": lambda: torch.arange(features),
            "reversed": lambda: torch.arange(features - 1, -1, -1),
            "random": lambda: torch.randperm(features, generator=generator),
        }
        if order not in orders:
            raise ValueError(f"order is 'natural', 'reversed', 'random' or a permutation, got {order!r}")
        return orders[order]()
    permutation = torch.as_tensor(order, dtype=torch.long)
    if permutation.shape != (features,) or not torch.equal(permutation.sort().values, torch.arange(features)):
        raise ValueError(f"an order of {features} features lists each of 0, ..., {features - 1} once, got {order!r}")
    return permutation


def input_degrees(order: Tensor) -> Tensor:
    """MADE's degrees of the inputs: ``m(order[j]) = j + 1``, the position of each feature in the order."""
    degrees = torch.empty_like(order)
    degrees[order] = torch.arange(1, order.numel() + 1)
    return degrees


def hidden_degrees(width: int, features: int, context_features: int = 0) -> Tensor:
    """Degrees of ``width`` hidden units, cycling through ``low, ..., D - 1`` so that each occurs.

    ``low`` is 1, or 0 where there is a context (or a single feature): a unit of degree 0 reads
    no feature, only the context, and feeds every output, the first feature's included.
    """
    low = 0 if context_features > 0 or features == 1 else 1
    return low + torch.arange(width) % (features - low)


class MaskedLinear(nn.Linear):
    """``y = x (W * M)^T + b`` with MADE's fixed binary mask ``M`` ``[out, in]`` (a buffer).

    ``M[k, j] = 1`` where ``out_degrees[k] >= in_degrees[j]``, or ``>`` where ``strict`` (the
    output layer: output ``i`` must not see feature ``i`` itself). ``[B, in] -> [B, out]``.
    """

    def __init__(self, in_degrees: Tensor, out_degrees: Tensor, strict: bool = False) -> None:
        super().__init__(in_degrees.numel(), out_degrees.numel())
        out_degrees, in_degrees = out_degrees[:, None], in_degrees[None, :]
        connected = out_degrees > in_degrees if strict else out_degrees >= in_degrees
        self.register_buffer("mask", connected.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation: ``[B, D]`` (and a context ``[B, C]``) to ``[B, P D]``.

    Output ``p D + i`` (block ``p``, feature ``i``: the layout of
    :class:`~course_pkg.flows.coupling.BaseCoupling`) depends only on the context and on the
    features before ``i`` in ``order``. Masked linear layers of the widths in ``hidden_features``
    with ``activation`` between them; the context enters every unit of the first hidden layer (it
    has degree 0). The last layer starts at zero, so a new MADE returns 0.
    """

    def __init__(
        self,
        features: int,
        outputs_per_feature: int = 1,
        hidden_features: Sequence[int] = (64, 64),
        order: Order = "natural",
        context_features: int = 0,
        seed: int | None = None,
        activation: type[nn.Module] = nn.SiLU,
    ) -> None:
        super().__init__()
        expect_hidden_features("MADE", hidden_features)
        self.features, self.context_features = features, context_features
        self.register_buffer("order", autoregressive_order(features, order, seed))
        self.register_buffer("degrees", input_degrees(self.order))
        degrees = torch.cat((torch.zeros(context_features, dtype=torch.long), self.degrees))
        layers: list[nn.Module] = []
        for width in hidden_features:
            unit_degrees = hidden_degrees(width, features, context_features)
            layers += [MaskedLinear(degrees, unit_degrees), activation()]
            degrees = unit_degrees
        output = MaskedLinear(degrees, self.degrees.repeat(outputs_per_feature), strict=True)
        nn.init.zeros_(output.weight)
        nn.init.zeros_(output.bias)
        self.network = nn.Sequential(*layers, output)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        expect_context(f"MADE(features={self.features})", x, context, self.context_features)
        return self.network(x if context is None else torch.cat((context, x), dim=1))


class MaskedAutoregressive(Flow):
    """One masked autoregressive layer (MAF): ``z_i = tau(x_i; MADE(x)_i)``, ``[B, D]`` in and out.

    ``log|det dz/dx| = sum_i log|tau'(x_i)|``. ``forward`` (the density direction) is one pass of
    the MADE conditioner, which returns ``P = transformer.params_per_feature`` numbers per
    feature. ``inverse`` takes ``D`` passes: after pass ``t`` the features of degree ``<= t`` are
    exact (their numbers depend only on earlier ones); the others are held at 0 until their turn.
    IAF is ``Inverse(MaskedAutoregressive(...))``. With a context (``context_features > 0``) both
    directions take it as a second argument, ``[B, C]``: ``layer(x, context)``.

    >>> from course_pkg.flows.transformers import Affine
    >>> layer = MaskedAutoregressive(3, Affine(), hidden_features=(16,), order="reversed")
    >>> x = torch.randn(5, 3)
    >>> z, log_det = layer(x)
    >>> bool(torch.equal(z, x)), bool(torch.equal(log_det, torch.zeros(5)))  # new: the identity
    (True, True)
    """

    def __init__(
        self,
        features: int,
        transformer: Transformer,
        hidden_features: Sequence[int] = (64, 64),
        order: Order = "natural",
        context_features: int = 0,
        seed: int | None = None,
        activation: type[nn.Module] = nn.SiLU,
    ) -> None:
        super().__init__()
        expect_transformer(type(self).__name__, transformer)
        self.transformer = transformer
        self.conditioner = MADE(
            features, transformer.params_per_feature, hidden_features, order, context_features, seed, activation
        )

    @property
    def features(self) -> int:
        return self.conditioner.features

    @property
    def order(self) -> Tensor:
        """The features in the order they are generated."""
        return self.conditioner.order

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._expect(x)
        z, ladj = self.transformer(x, self._params(x, context))
        return z, ladj.sum(dim=1)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._expect(z)
        x = torch.zeros_like(z)
        for degree in range(1, self.features + 1):
            step, ladj = self.transformer.inverse(z, self._params(x, context))
            x = torch.where(self.conditioner.degrees <= degree, step, x)
        return x, ladj.sum(dim=1)  # the last pass's numbers are all exact

    def _params(self, x: Tensor, context: Tensor | None) -> Tensor:
        return params_from_blocks(self.conditioner(x, context), self.transformer.params_per_feature)

    def _expect(self, x: Tensor) -> None:
        expect_input(x, f"MaskedAutoregressive(features={self.features})", dims=(2,), size=self.features)

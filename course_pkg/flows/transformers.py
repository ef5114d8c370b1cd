"""Transformers: the monotone elementwise maps inside coupling and autoregressive layers (chapters 3, 4, 6).

A coupling or autoregressive layer decides *which* features condition which, a network (the
conditioner) turns those into numbers, and a transformer maps each transformed feature with its
own numbers: ``y_i = tau(x_i; params_i)``, monotone in ``x_i``. Because ``y_i`` depends on ``x_i``
only through ``tau``, the layer's Jacobian is triangular and its log-determinant is the sum of
the elementwise ``log|dy_i/dx_i|`` that the transformer returns.

Every transformer has ``params_per_feature`` (``P``) and two methods:

- ``forward(x, params) -> (y, ladj)`` with ``params.shape == x.shape + (P,)`` and
  ``ladj = log|dy/dx|`` elementwise, of ``x``'s shape (not summed: the layer sums it);
- ``inverse(y, params) -> (x, ladj)`` with ``ladj = log|dx/dy|`` elementwise.

Any leading shape works: ``[B, D]``, ``[B, C, H, W]``, or a single feature. No transformer changes
its inputs in place.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from course_pkg.flows._inputs import expect_params, expect_scale_bound, expect_spline


def expect_transformer(layer: str, transformer: object) -> None:
    """Raise ``TypeError`` unless ``transformer`` is one of this module's maps (a network, say, is not)."""
    if not isinstance(transformer, Transformer):
        raise TypeError(
            f"{layer} takes a transformer from course_pkg.flows.transformers (Additive(), Affine(), "
            f"RationalQuadraticSpline(...), ...), got {type(transformer).__name__}"
        )


def params_from_blocks(conditioner_output: Tensor, params_per_feature: int) -> Tensor:
    """A conditioner's ``P`` blocks along dimension 1 as a transformer's ``params`` (a view).

    ``[B, P F, ...]`` (block ``p`` holding parameter ``p`` of all ``F`` features) to
    ``[B, F, ..., P]``: the layout that coupling and autoregressive layers share.
    """
    return conditioner_output.unflatten(1, (params_per_feature, -1)).movedim(1, -1)


class Transformer(nn.Module):
    """A monotone elementwise map ``y = tau(x; params)`` with ``params_per_feature`` numbers per feature.

    ``forward(x, params) -> (y, log|dy/dx|)`` and ``inverse(y, params) -> (x, log|dx/dy|)``, both
    elementwise: ``params`` is ``x.shape + (params_per_feature,)``, the log-derivatives have ``x``'s
    shape. A subclass writes ``_forward`` and ``_inverse``; the shape of ``params`` is checked here.
    """

    params_per_feature: int

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        expect_params(type(self).__name__, x, params, self.params_per_feature)
        return self._forward(x, params)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        expect_params(type(self).__name__, y, params, self.params_per_feature)
        return self._inverse(y, params)

    def _forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class Additive(Transformer):
    """NICE's shift (Dinh, Krueger & Bengio 2015): ``y = x + t``, ``log|dy/dx| = 0``; ``params[..., 0] = t``.

    >>> y, ladj = Additive()(torch.zeros(2, 3), torch.ones(2, 3, 1))
    >>> y.tolist(), ladj.tolist()
    ([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    """

    params_per_feature = 1

    def _forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return x + params.squeeze(-1), torch.zeros_like(x)

    def _inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return y - params.squeeze(-1), torch.zeros_like(y)


class Affine(Transformer):
    """RealNVP's scale and shift (Dinh, Sohl-Dickstein & Bengio 2017): ``y = x exp(s) + t``, ``log|dy/dx| = s``.

    ``params[..., 0]`` is a raw log-scale ``a`` and ``params[..., 1]`` the shift ``t``; the
    log-scale is soft-clipped, ``s = b tanh(a / b)`` with ``b = scale_bound``: ``|s| < b``, so
    ``exp(s)`` can neither overflow nor vanish, and ``s ~ a`` for small values. The inverse is
    ``x = (y - t) exp(-s)``, ``log|dx/dy| = -s``. ``a = t = 0`` is the identity.

    >>> y, ladj = Affine()(torch.tensor([1.0]), torch.tensor([[0.0, 2.0]]))
    >>> y.tolist(), ladj.tolist()
    ([3.0], [0.0])
    """

    params_per_feature = 2

    def __init__(self, scale_bound: float = 3.0) -> None:
        super().__init__()
        expect_scale_bound(type(self).__name__, scale_bound)
        self.scale_bound = float(scale_bound)

    def _forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self.log_scale_and_shift(params)
        return torch.addcmul(shift, x, torch.exp(log_scale)), log_scale

    def _inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self.log_scale_and_shift(params)
        return (y - shift) * torch.exp(-log_scale), -log_scale

    def log_scale_and_shift(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """``(s, t)``, each of shape ``params.shape[:-1]``: ``s = b tanh(a / b)``.

        (tanh, not the equal ``2 sigmoid(2 y) - 1``, which loses the precision of small ``s`` for
        large bounds.)
        """
        return self.scale_bound * torch.tanh(params[..., 0] / self.scale_bound), params[..., 1]

    def extra_repr(self) -> str:
        return f"scale_bound={self.scale_bound:g}"


class RationalQuadraticSpline(Transformer):
    """Neural spline flows' monotone rational-quadratic spline (Durkan, Bekasov, Murray & Papamakarios 2019).

    On ``[-B, B]`` (``B = bound``) the map is a spline of ``K = bins`` pieces through the knots
    ``(x_k, y_k)``, ``k = 0 .. K``, with ``x_0 = y_0 = -B``, ``x_K = y_K = B`` and derivatives
    ``d_k > 0`` at the knots; outside it is the identity (``d_0 = d_K = 1``, so the derivative is
    continuous there too). In bin ``k``, with ``w = x_{k+1} - x_k``, ``h = y_{k+1} - y_k``,
    ``s = h / w`` and ``xi = (x - x_k) / w`` in ``[0, 1]``:

        y = y_k + h (s xi^2 + d_k xi (1 - xi)) / (s + (d_{k+1} + d_k - 2 s) xi (1 - xi)),
        dy/dx = s^2 (d_{k+1} xi^2 + 2 s xi (1 - xi) + d_k (1 - xi)^2) / (s + (d_{k+1} + d_k - 2 s) xi (1 - xi))^2.

    ``params[..., :K]`` are the unnormalised bin widths, ``params[..., K:2K]`` the heights and
    ``params[..., 2K:]`` the ``K - 1`` interior derivatives, so ``params_per_feature = 3K - 1``.
    Each bin takes a share ``m + (1 - m K) softmax(...)`` of the interval (``m = min_bin_size``)
    and each derivative is ``m_d + softplus(...)`` (``m_d = min_derivative``), shifted so that
    all-zero params give ``d_k = 1`` and equal bins: the identity (up to rounding). So no value of
    the params makes a bin empty or a slope vanish.

    The inverse is exact, not a bisection: in bin ``k`` (found among the ``y_k``), ``xi`` is the
    root in ``[0, 1]`` of the quadratic ``a xi^2 + b xi + c = 0`` that ``y`` gives, with
    ``c = -s (y - y_k) <= 0``: ``xi = 2 c / (-b - sqrt(b^2 - 4 a c))`` where ``b >= 0`` and the equal
    ``(-b + sqrt(b^2 - 4 a c)) / (2 a)`` where ``b < 0`` (there the first form subtracts two nearly
    equal numbers, in a wide flat bin that ends steeply, and loses digits). The spline is evaluated
    only at inputs clamped to ``[-B, B]``, so the branch not taken by ``where`` stays finite and its
    gradient is zero.

    Low precision: the knots are a cumulative sum whose bins can be as small as ``2 B m``, finer
    than float16 or bfloat16 resolve near ``B``; inputs and params of less than float32
    precision (float16, bfloat16, as autocast makes them) are computed in float32, and ``y`` and
    ``ladj`` come back in ``x``'s dtype.

    >>> spline = RationalQuadraticSpline(bins=4, bound=3.0)
    >>> x = torch.tensor([-5.0, -1.0, 0.5, 3.0])
    >>> y, ladj = spline(x, torch.zeros(4, spline.params_per_feature))  # zero params: the identity
    >>> torch.allclose(y, x), torch.allclose(ladj, torch.zeros(4), atol=1e-6)
    (True, True)
    """

    def __init__(
        self, bins: int = 8, bound: float = 3.0, min_bin_size: float = 1e-3, min_derivative: float = 1e-3
    ) -> None:
        super().__init__()
        expect_spline(type(self).__name__, bins, bound, min_bin_size, min_derivative)
        self.bins, self.bound = bins, float(bound)
        self.min_bin_size, self.min_derivative = float(min_bin_size), float(min_derivative)
        self.params_per_feature = 3 * bins - 1
        self._derivative_shift = math.log(math.expm1(1 - min_derivative))  # softplus(shift) = 1 - min_derivative

    def _forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        inside, x_inside, knots = self._prepare(x, params)
        piece = knots.locate(x_inside, by=knots.x)
        xi = (x_inside - piece.x) / piece.width  # in [0, 1]: rounding is monotone
        rise = piece.height * (piece.slope * xi**2 + piece.left_derivative * xi * (1 - xi)) / piece.denominator(xi)
        return _identity_outside(inside, x, piece.y + rise, piece.log_derivative(xi))

    def _inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        inside, y_inside, knots = self._prepare(y, params)
        piece = knots.locate(y_inside, by=knots.y)
        offset, curvature = y_inside - piece.y, piece.left_derivative + piece.right_derivative - 2 * piece.slope
        a = piece.height * (piece.slope - piece.left_derivative) + offset * curvature
        b = piece.height * piece.left_derivative - offset * curvature
        c = -piece.slope * offset
        root = torch.sqrt((b**2 - 4 * a * c).clamp_min(0))
        # The root in [0, 1], 2 c / (-b - root) = (-b + root) / (2 a), in the form that does not cancel.
        # Both denominators are nonzero where they are chosen, so neither branch makes inf or NaN.
        numerator = torch.where(b >= 0, 2 * c, -b + root)
        xi = numerator / torch.where(b >= 0, -b - root, 2 * a)
        return _identity_outside(inside, y, piece.x + xi * piece.width, -piece.log_derivative(xi))

    def _prepare(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor, _Knots]:
        """``(inside, x clamped to [-B, B], knots)``, in at least float32."""
        dtype = torch.promote_types(torch.promote_types(x.dtype, params.dtype), torch.float32)
        x, params = x.to(dtype), params.to(dtype)
        return x.abs() <= self.bound, x.clamp(-self.bound, self.bound), self.knots(params)

    def knots(self, params: Tensor) -> _Knots:
        """The knots ``x_k``, ``y_k`` and derivatives ``d_k``, each ``params.shape[:-1] + (K + 1,)``."""
        widths, heights, derivatives = params.split((self.bins, self.bins, self.bins - 1), dim=-1)
        interior = self.min_derivative + nn.functional.softplus(derivatives + self._derivative_shift)
        ones = interior.new_ones(*interior.shape[:-1], 1)
        return _Knots(self._positions(widths), self._positions(heights), torch.cat((ones, interior, ones), dim=-1))

    def _positions(self, unnormalised: Tensor) -> Tensor:
        """``-B, ..., B``: the ends exactly, the ``K - 1`` interior knots at the cumulative bin shares."""
        shares = self.min_bin_size + (1 - self.min_bin_size * self.bins) * torch.softmax(unnormalised, dim=-1)
        interior = self.bound * (2 * torch.cumsum(shares[..., :-1], dim=-1) - 1)
        end = interior.new_full((*interior.shape[:-1], 1), self.bound)
        return torch.cat((-end, interior, end), dim=-1)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, bound={self.bound:g}"


class _Knots(NamedTuple):
    """A spline's knots ``x`` and ``y`` and derivatives, each ``[..., K + 1]``."""

    x: Tensor
    y: Tensor
    derivatives: Tensor

    def locate(self, values: Tensor, by: Tensor) -> _Bin:
        """The bin of each value in ``[-B, B]``, searched among the knots ``by`` (``x`` or ``y``).

        Searching the ``K - 1`` interior knots gives an index in ``0 .. K - 1`` for every value, both
        ends included: ``B`` itself falls in the last piece.
        """
        index = torch.searchsorted(by[..., 1:-1].contiguous(), values.unsqueeze(-1), right=True)

        def at(knots: Tensor, shift: int = 0) -> Tensor:
            return knots.gather(-1, index + shift).squeeze(-1)

        return _Bin(at(self.x), at(self.x, 1) - at(self.x), at(self.y), at(self.y, 1) - at(self.y),
                    at(self.derivatives), at(self.derivatives, 1))


class _Bin(NamedTuple):
    """One bin per value: its left knot ``(x, y)``, ``width``, ``height`` and end derivatives."""

    x: Tensor
    width: Tensor
    y: Tensor
    height: Tensor
    left_derivative: Tensor
    right_derivative: Tensor

    @property
    def slope(self) -> Tensor:
        return self.height / self.width

    def denominator(self, xi: Tensor) -> Tensor:
        """``s + (d_{k+1} + d_k - 2 s) xi (1 - xi)``, positive."""
        return self.slope + (self.left_derivative + self.right_derivative - 2 * self.slope) * xi * (1 - xi)

    def log_derivative(self, xi: Tensor) -> Tensor:
        """``log dy/dx = 2 log s + log(d_{k+1} xi^2 + 2 s xi (1 - xi) + d_k (1 - xi)^2) - 2 log(denominator)``."""
        numerator = (
            self.right_derivative * xi**2 + 2 * self.slope * xi * (1 - xi) + self.left_derivative * (1 - xi) ** 2
        )
        return 2 * torch.log(self.slope) + torch.log(numerator) - 2 * torch.log(self.denominator(xi))


def _identity_outside(inside: Tensor, x: Tensor, y: Tensor, ladj: Tensor) -> tuple[Tensor, Tensor]:
    """``(y, ladj)`` inside ``[-B, B]``, ``(x, 0)`` outside, in ``x``'s dtype."""
    return torch.where(inside, y.to(x.dtype), x), torch.where(inside, ladj.to(x.dtype), 0.0)

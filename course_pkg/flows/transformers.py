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

import torch
from torch import Tensor, nn

from course_pkg.flows._inputs import expect_params, expect_scale_bound


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

"""Planar and radial flows (Rezende & Mohamed 2015, "Variational inference with normalizing flows").

Both were designed for the *sampling* direction: push a base sample ``z`` through a closed-form
map ``x = f(z)`` and know the density of the result, ``log q(x) = log p_Z(z) - log|det df/dz|``
(variational inference). Neither map has a closed-form inverse in general. In this package's
direction (``forward``: data to latent) the closed-form map is therefore :meth:`inverse`, which
returns ``log|det dx/dz|``, and ``forward`` computes ``f^{-1}`` numerically so that the layer is
still a complete :class:`~course_pkg.flows.base.Flow` and can evaluate the density of any point:

- planar: ``f^{-1}`` reduces to a monotone scalar equation along ``w``, solved by bisection (an
  iterative loop, several times slower than the closed-form direction, though only on one number
  per sample);
- radial: ``f^{-1}`` reduces to a quadratic equation in the radius, solved in closed form.

Both ``forward`` methods end with a differentiable step from the detached root, so gradients with
respect to inputs and parameters are those of the exact inverse (implicit function theorem).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_pkg.flows._inputs import expect_input
from course_pkg.flows.base import Flow


class Planar(Flow):
    """Planar flow: the closed-form map (latent to data) is ``x = z + u_hat tanh(w^T z + b)``.

    ``z``, ``x`` ``[B, D]``; ``u``, ``w`` ``[D]``, ``b`` a scalar. The Jacobian
    ``I + u_hat h'(w^T z + b) w^T`` has determinant ``1 + h'(w^T z + b) w^T u_hat`` (matrix
    determinant lemma), so :meth:`inverse` returns ``log|det dx/dz| = log(1 + h' w^T u_hat)``
    with ``h' = 1 - tanh^2``.

    Invertibility: ``f`` is a bijection iff ``w^T u_hat >= -1``. The parameterisation enforces it
    for every ``u``: ``u_hat = u + (m(w^T u) - w^T u) w / |w|^2`` with ``m(a) = -1 + softplus(a)``,
    which gives ``w^T u_hat = m(w^T u) > -1``.

    :meth:`forward` (data to latent) has no closed form: with ``a = w^T z``, ``w^T x = a + c tanh(a + b)``
    where ``c = w^T u_hat > -1``, a strictly increasing function of ``a``. It is solved by bisection
    in ``[w^T x - |c|, w^T x + |c|]`` (``|tanh| <= 1``), polished by one Newton step, and then
    ``z = x - u_hat tanh(a + b)``. Iterative, so slower than :meth:`inverse`.

    >>> layer = Planar(2)
    >>> z = torch.randn(100, 2)
    >>> x, log_det_sampling = layer.inverse(z)  # closed form: sample and score as in the paper
    >>> z_again, log_det_density = layer(x)  # by bisection: the density of any point
    >>> bool(torch.allclose(z_again, z, atol=1e-5)), bool(torch.allclose(log_det_density, -log_det_sampling, atol=1e-5))
    (True, True)
    """

    bisection_steps = 80

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = features
        self.u = nn.Parameter(torch.randn(features) / math.sqrt(features))
        self.w = nn.Parameter(torch.randn(features) / math.sqrt(features))
        self.b = nn.Parameter(torch.zeros(()))

    def constrained_u(self) -> Tensor:
        """``u_hat = u + (m(w^T u) - w^T u) w / |w|^2`` with ``m(a) = -1 + softplus(a)``, so ``w^T u_hat > -1``."""
        w_dot_u = self.w @ self.u
        tiny = torch.finfo(self.w.dtype).tiny  # w = 0 exactly: u_hat = u and w^T u_hat = 0
        return self.u + (-1 + F.softplus(w_dot_u) - w_dot_u) * self.w / (self.w @ self.w).clamp_min(tiny)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Closed form, latent to data: ``x = z + u_hat tanh(w^T z + b)`` and ``log|det dx/dz|``."""
        self._expect(z)
        u_hat = self.constrained_u()
        activation = torch.tanh(z @ self.w + self.b)
        x = z + activation[:, None] * u_hat
        return x, self._log_det_sampling(activation, self.w @ u_hat)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Numerical inverse, data to latent: solve ``a + c tanh(a + b) = w^T x`` for ``a = w^T z``."""
        self._expect(x)
        u_hat = self.constrained_u()
        c = self.w @ u_hat
        target = x @ self.w

        def residual(a: Tensor) -> Tensor:
            return a + c * torch.tanh(a + self.b) - target

        with torch.no_grad():
            root = _bisect(residual, target - c.abs(), target + c.abs(), self.bisection_steps)
        # One Newton step from the detached root: the value stays the root, and its gradient is the
        # implicit-function one, -(d residual / d theta) / (d residual / d a).
        a = root - residual(root) / (1 + c * (1 - torch.tanh(root + self.b) ** 2))
        activation = torch.tanh(a + self.b)
        z = x - activation[:, None] * u_hat
        return z, -self._log_det_sampling(activation, c)

    @staticmethod
    def _log_det_sampling(activation: Tensor, c: Tensor) -> Tensor:
        """``log|det dx/dz| = log(1 + (1 - tanh^2) w^T u_hat)``, positive inside the log as ``c > -1``."""
        return torch.log1p((1 - activation**2) * c)

    def _expect(self, x: Tensor) -> None:
        expect_input(x, f"Planar({self.features})", dims=(2,), size=self.features)


def _bisect(increasing: Callable[[Tensor], Tensor], low: Tensor, high: Tensor, steps: int) -> Tensor:
    """The root of an increasing function in ``[low, high]``, elementwise, by ``steps`` halvings.

    A fixed number of steps and ``torch.where`` instead of a data-dependent ``while``: it runs
    unchanged on a GPU and under ``torch.func.vmap``.
    """
    for _ in range(steps):
        middle = (low + high) / 2
        above = increasing(middle) > 0
        low, high = torch.where(above, low, middle), torch.where(above, middle, high)
    return (low + high) / 2


class Radial(Flow):
    """Radial flow: the closed-form map (latent to data) is ``x = z + beta h(r) (z - z0)``.

    ``z``, ``x`` ``[B, D]``; ``z0`` ``[D]``; ``r = |z - z0|``, ``h(r) = 1 / (alpha + r)``. It
    contracts (``beta < 0``) or expands (``beta > 0``) space around ``z0``. :meth:`inverse` returns
    ``log|det dx/dz| = (D - 1) log(1 + beta h) + log(1 + beta h + beta h'(r) r)``
    ``= (D - 1) log(1 + beta h) + log(1 + beta alpha h^2)``.

    Invertibility needs ``alpha > 0`` and ``beta >= -alpha``; the parameterisation enforces both:
    ``alpha = softplus(alpha_raw)`` and ``beta = -alpha + softplus(beta_raw)``. Starts at the identity
    (``beta = 0``).

    :meth:`forward` (data to latent): ``x - z0`` is ``z - z0`` scaled by ``1 + beta h(r) > 0``, so
    only the radius is unknown. ``rho = |x - z0| = r + beta r / (alpha + r)`` is the quadratic
    ``r^2 + (alpha + beta - rho) r - rho alpha = 0`` with exactly one root ``r >= 0``, taken in a
    cancellation-free form; then ``z = z0 + (x - z0) / (1 + beta h(r))``.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = features
        self.z0 = nn.Parameter(torch.randn(features))
        # alpha_raw = beta_raw = 0 gives softplus(beta_raw) = alpha, so beta = 0: the identity.
        self.alpha_raw = nn.Parameter(torch.zeros(()))
        self.beta_raw = nn.Parameter(torch.zeros(()))

    def alpha_beta(self) -> tuple[Tensor, Tensor]:
        """``alpha = softplus(alpha_raw) > 0`` and ``beta = -alpha + softplus(beta_raw) > -alpha``."""
        alpha = F.softplus(self.alpha_raw)
        return alpha, -alpha + F.softplus(self.beta_raw)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Closed form, latent to data: ``x = z + beta (z - z0) / (alpha + r)`` and ``log|det dx/dz|``."""
        self._expect(z)
        alpha, beta = self.alpha_beta()
        offset = z - self.z0
        radius = offset.norm(dim=1)
        x = z + (beta / (alpha + radius))[:, None] * offset
        return x, self._log_det_sampling(radius, alpha, beta)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Inverse through the radius: solve ``r^2 + (alpha + beta - rho) r - rho alpha = 0``."""
        self._expect(x)
        alpha, beta = self.alpha_beta()
        offset = x - self.z0
        rho = offset.norm(dim=1)
        linear = alpha + beta - rho
        root_of_discriminant = torch.sqrt(linear**2 + 4 * rho * alpha)
        sum_of_magnitudes = root_of_discriminant + linear.abs()  # >= 0, zero only when rho = 0
        radius = torch.where(
            linear >= 0,
            2 * rho * alpha / sum_of_magnitudes.clamp_min(torch.finfo(x.dtype).tiny),
            sum_of_magnitudes / 2,
        )
        z = self.z0 + offset / (1 + beta / (alpha + radius))[:, None]
        return z, -self._log_det_sampling(radius, alpha, beta)

    def _log_det_sampling(self, radius: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
        """``(D - 1) log(1 + beta h) + log(1 + beta alpha h^2)`` at ``h = 1 / (alpha + r)``."""
        h = 1 / (alpha + radius)
        return (self.features - 1) * torch.log1p(beta * h) + torch.log1p(beta * alpha * h**2)

    def _expect(self, x: Tensor) -> None:
        expect_input(x, f"Radial({self.features})", dims=(2,), size=self.features)

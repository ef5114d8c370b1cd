"""Flow matching: training a continuous flow's vector field by regression, without solving an ODE.

A probability path carries the data ``x`` (at ``t = 0``, the package's direction of ``forward``)
to the noise ``eps ~ N(0, I)`` (at ``t = 1``). Conditioned on one pair ``(x, eps)`` the straight
path and its velocity are

    z_t = (1 - t) x + t eps,      dz_t/dt = eps - x,

and the *conditional flow-matching* loss (Lipman et al. 2023; Liu et al. 2023, "rectified flow")

    L(theta) = E_{t ~ U[0, 1], (x, eps) ~ pi} |f_theta(t, z_t) - (eps - x)|^2

has the same minimiser as the regression on the marginal velocity ``u_t(z) = E[eps - x | z_t = z]``,
whose ODE moves the data distribution onto the noise one. The trained field is a
:class:`~course_pkg.flows.continuous.CNF`'s field as it is: sampling integrates from ``t = 1`` to
``0``, and the CNF's trace integral gives the exact log-likelihood.

The coupling ``pi`` of data and noise is the independent one (each batch paired at random), or a
minibatch optimal-transport plan (Tong et al. 2024): pairs that are close, so paths cross less and
the learned ODE is straighter. The entropic plans of POT's Sinkhorn solver, with the Brownian
bridge ``z_t = (1 - t) x + t y + sigma sqrt(t (1 - t)) xi`` between paired points, are the
Schroedinger bridge of the same problem: its stochastic generalisation.
"""

from __future__ import annotations

from collections.abc import Callable

import ot
import torch
from torch import Tensor

VectorField = Callable[[Tensor, Tensor], Tensor]  # f(t, z): t [B] or 0-dim, z [B, D] -> [B, D]
COUPLINGS = ("independent", "ot")


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """The cost matrix ``C_ij = |x_i - y_j|^2``: ``x`` ``[N, D]``, ``y`` ``[M, D]`` -> ``[N, M]``."""
    return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist").pow(2)  # exact 0 for equal points


def transport_plan(x: Tensor, y: Tensor, regularization: float = 0.0) -> Tensor:
    """The optimal plan between the empirical measures of ``x`` ``[N, D]`` and ``y`` ``[M, D]``: ``[N, M]``, summing to 1.

    With ``regularization = 0`` the exact plan of ``min_P <P, C>`` (POT's network simplex; for
    ``N = M`` a permutation scaled by ``1/N``); with ``regularization = eps > 0`` the entropic plan
    of ``min_P <P, C> - eps H(P)`` (Sinkhorn). The cost is divided by its mean first, so ``eps``
    is relative to a typical squared distance.
    """
    if regularization < 0:
        raise ValueError(f"transport_plan: regularization is >= 0, got {regularization}")
    cost = squared_distances(x, y).double()
    cost = cost / cost.mean()
    a = torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=cost.dtype, device=cost.device)
    b = torch.full((y.shape[0],), 1.0 / y.shape[0], dtype=cost.dtype, device=cost.device)
    if regularization == 0:
        plan = ot.emd(a, b, cost)
    else:
        plan = ot.sinkhorn(a, b, cost, regularization, numItermax=10_000, stopThr=1e-9)
    if not torch.isfinite(plan).all():
        raise FloatingPointError(f"transport_plan: Sinkhorn diverged at regularization {regularization}; use a larger one")
    return plan.to(x.dtype)


def wasserstein2(x: Tensor, y: Tensor) -> float:
    """The 2-Wasserstein distance ``(min_P <P, C>)^(1/2)`` between the empirical measures of ``x`` and ``y`` (exact, POT)."""
    cost = squared_distances(x, y).double()
    a = torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=cost.dtype)
    b = torch.full((y.shape[0],), 1.0 / y.shape[0], dtype=cost.dtype)
    return float(ot.emd2(a, b, cost.cpu(), numItermax=1_000_000)) ** 0.5


def sample_pairs(plan: Tensor, num_pairs: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``num_pairs`` index pairs ``(i, j)`` drawn with probabilities ``plan[i, j]``: two ``[num_pairs]`` tensors."""
    flat = torch.multinomial(plan.flatten().clamp_min(0), num_pairs, replacement=True, generator=generator)
    return flat // plan.shape[1], flat % plan.shape[1]


def couple(x: Tensor, noise: Tensor, coupling: str) -> tuple[Tensor, Tensor]:
    """Pair a data batch ``x`` ``[B, D]`` with a noise batch ``[B, D]``: ``'independent'`` as drawn, ``'ot'`` by the exact plan.

    The exact plan of two batches of the same size is a permutation (:func:`transport_plan`), so
    ``'ot'`` reorders the noise and uses every sample once.
    """
    if coupling not in COUPLINGS:
        raise ValueError(f"couple: coupling is one of {COUPLINGS}, got {coupling!r}")
    if coupling == "independent":
        return x, noise
    return x, noise[transport_plan(x, noise).argmax(dim=1)]


def interpolate(x: Tensor, noise: Tensor, t: Tensor, sigma: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """``z_t = (1 - t) x + t noise + sigma sqrt(t (1 - t)) xi``: ``x``, ``noise`` ``[B, D]``, ``t`` ``[B]`` -> ``[B, D]``.

    ``sigma = 0`` is the straight path; ``sigma > 0`` a Brownian bridge pinned at both ends.
    """
    t = t[:, None]
    path = (1 - t) * x + t * noise
    if sigma == 0:
        return path
    xi = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return path + sigma * (t * (1 - t)).sqrt() * xi


def flow_matching_loss(
    field: VectorField, x: Tensor, coupling: str = "independent", generator: torch.Generator | None = None
) -> Tensor:
    """The conditional flow-matching loss ``mean |f(t, z_t) - (eps - x)|^2`` of a data batch ``x`` ``[B, D]``: a scalar.

    Draws ``eps ~ N(0, I)`` and ``t ~ U[0, 1]`` per sample, pairs ``(x, eps)`` by ``coupling``
    (:func:`couple`) and regresses the field at ``z_t`` on the straight path's velocity.
    """
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    x, noise = couple(x, noise, coupling)
    t = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device=x.device)
    velocity = field(t, interpolate(x, noise, t))
    return (velocity - (noise - x)).pow(2).sum(dim=1).mean()

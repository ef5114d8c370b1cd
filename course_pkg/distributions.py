"""Base distributions and the normalizing flow model built on them.

A flow model evaluates densities by the change of variables (DESIGN's direction, data to latent):

    log p(x) = log p_Z(f(x)) + log|det df/dx|,

and samples by drawing ``z ~ p_Z`` and running the inverse, ``x = f^{-1}(z)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from course_pkg.flows.base import Flow


class StandardNormal(nn.Module):
    """The standard normal ``N(0, I)`` over tensors of shape ``[*event_shape]``.

    ``log_prob(z) = -0.5 * (|z|^2 + D log(2 pi))`` with ``D = prod(event_shape)``, shape ``[batch]``.
    """

    def __init__(self, event_shape: int | Sequence[int]) -> None:
        super().__init__()
        self.event_shape = torch.Size([event_shape] if isinstance(event_shape, int) else event_shape)
        # A buffer only to follow the model's device and dtype under .to(...).
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    @property
    def dimension(self) -> int:
        return math.prod(self.event_shape)

    def log_prob(self, z: Tensor) -> Tensor:
        if z.shape[1:] != self.event_shape:
            raise ValueError(
                f"StandardNormal over {tuple(self.event_shape)} got a batch of shape "
                f"{tuple(z.shape)}; expected [batch, {', '.join(map(str, self.event_shape))}]"
            )
        squared_norm = z.reshape(z.shape[0], -1).pow(2).sum(dim=1)
        return -0.5 * (squared_norm + self.dimension * math.log(2 * math.pi))

    def sample(self, num_samples: int, temperature: float = 1.0) -> Tensor:
        """Draw ``[num_samples, *event_shape]``; ``temperature`` scales the standard deviation."""
        shape = (num_samples, *self.event_shape)
        return temperature * torch.randn(shape, device=self._anchor.device, dtype=self._anchor.dtype)


class NormalizingFlow(nn.Module):
    """A density model ``p(x)`` from a flow ``transform`` (data to latent) and a ``base`` on ``z``.

    ``log_prob(x)`` is ``[batch]``; ``sample(n)`` is ``[n, *event_shape]``; ``nll`` is the mean
    negative log-likelihood in nats, and ``bits_per_dim`` the same in bits per dimension.
    """

    def __init__(self, transform: Flow, base: StandardNormal) -> None:
        super().__init__()
        self.transform = transform
        self.base = base

    def log_prob(self, x: Tensor) -> Tensor:
        z, log_det = self.transform(x)
        return self.base.log_prob(z) + log_det

    @torch.no_grad()
    def sample(self, num_samples: int, temperature: float = 1.0) -> Tensor:
        z = self.base.sample(num_samples, temperature)
        x, _ = self.transform.inverse(z)
        return x

    def nll(self, x: Tensor) -> Tensor:
        """Mean negative log-likelihood ``-1/B sum_b log p(x_b)`` in nats (a 0-dim tensor)."""
        return -self.log_prob(x).mean()

    def bits_per_dim(self, x: Tensor) -> Tensor:
        """``nll / (D ln 2)``: the average code length per dimension in bits.

        For 8-bit images this is the papers' figure only when ``x`` already lives in the discrete
        space's scale (dequantization and preprocessing log-dets are part of ``transform``).
        """
        dimension = math.prod(x.shape[1:])
        return self.nll(x) / (dimension * math.log(2))

"""Elementwise flows (chapter 2): each output depends on one input, so the Jacobian is diagonal and
the log-det is the sum of the logs of its diagonal, ``log|det dz/dx| = sum_i log|dz_i/dx_i|``.

Direction as in :class:`~course_pkg.flows.base.Flow`: ``forward`` maps data ``x`` to latent ``z``
and returns ``log|det dz/dx|``; ``inverse`` maps back and returns ``log|det dx/dz|``.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from course_pkg.flows._inputs import expect_in_interval, expect_input
from course_pkg.flows.base import Flow, sum_except_batch


class Affine(Flow):
    """Per-channel affine map ``z = exp(log_scale) * x + shift`` with learned ``log_scale``, ``shift``.

    ``x`` is ``[B, C]`` or ``[B, C, H, W]``; ``log_scale`` and ``shift`` are ``[C]`` and are shared by
    every spatial position, so ``log|det dz/dx| = H W sum_c log_scale_c`` (``H W = 1`` for vectors).
    The scale is ``exp`` of a free parameter, so it is positive and the map invertible whatever the
    parameters. Starts as the identity.
    """

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.log_scale = nn.Parameter(torch.zeros(num_channels))
        self.shift = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._expect(x)
        log_scale, shift = self._broadcast(self.log_scale, x), self._broadcast(self.shift, x)
        z = torch.exp(log_scale) * x + shift
        return z, self._log_det(x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        self._expect(z)
        log_scale, shift = self._broadcast(self.log_scale, z), self._broadcast(self.shift, z)
        x = (z - shift) * torch.exp(-log_scale)
        return x, -self._log_det(z)

    def _log_det(self, x: Tensor) -> Tensor:
        positions = math.prod(x.shape[2:])  # 1 for [B, C]
        return positions * self.log_scale.sum() * x.new_ones(x.shape[0])

    def _expect(self, x: Tensor) -> None:
        expect_input(x, f"{type(self).__name__}({self.num_channels})", dims=(2, 4), size=self.num_channels)

    @staticmethod
    def _broadcast(parameter: Tensor, x: Tensor) -> Tensor:
        """``[C]`` -> ``[1, C]`` or ``[1, C, 1, 1]``, to broadcast against ``x``."""
        return parameter.reshape(1, -1, *([1] * (x.dim() - 2)))


class ActNorm(Affine):
    """Activation normalisation (Glow, Kingma & Dhariwal 2018): :class:`Affine` with data-dependent init.

    ``z = exp(log_scale) * x + shift`` per channel, ``x`` ``[B, C]`` or ``[B, C, H, W]``,
    ``log|det dz/dx| = H W sum_c log_scale_c``. On the first call of ``forward`` the parameters are
    set so that this batch comes out with mean 0 and standard deviation 1 per channel (statistics
    over the batch and every spatial position, population standard deviation):
    ``shift = -mean / std``, ``log_scale = -log std``. That happens once: the buffer ``initialized``
    records it and travels with ``state_dict``, so a loaded model is not re-initialised. Calling
    ``inverse`` first (sampling an untrained model) uses the parameters as they are. The standard
    deviation is clamped below at ``eps``, so a constant channel cannot produce an infinite scale.

    >>> layer = ActNorm(3)
    >>> z, log_det = layer(5 + 2 * torch.randn(256, 3, 8, 8))  # initialises on this batch
    >>> bool(z.mean().abs() < 1e-4), bool((z.std(dim=(0, 2, 3), correction=0) - 1).abs().max() < 1e-4)
    (True, True)
    >>> log_det.shape
    torch.Size([256])
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels)
        self.eps = eps
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._expect(x)
        # A compiled model cannot branch on a tensor: initialise before compiling (as the training command does).
        if not torch.compiler.is_compiling() and not self.initialized:
            self.initialize(x)
        return super().forward(x)

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set ``shift`` and ``log_scale`` so that ``x`` maps to mean 0, std 1 per channel.

        Under ``torch.distributed`` (an initialised process group, as with ``torchrun``) the
        statistics are those of the global batch, every process's ``x`` together: the per-channel
        sums and sums of squares are added up over the processes, so all of them set the same
        parameters. (Statistics of each process's own part would differ, and DistributedDataParallel
        broadcasts parameters only once, when it wraps the model: the copies would disagree from
        the first step on.) Every process must then call ``initialize`` at the same point.
        """
        self._expect(x)
        dims = [0, *range(2, x.dim())]
        values = x.detach().double()  # sums of squares in float64: no cancellation in E[x^2] - E[x]^2
        stats = torch.stack([values.sum(dim=dims), values.pow(2).sum(dim=dims)])
        count = torch.tensor(float(x.numel() // self.num_channels), dtype=torch.float64, device=x.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
            dist.all_reduce(count)
        mean = stats[0] / count
        std = (stats[1] / count - mean**2).clamp_min(0).sqrt().clamp_min(self.eps)
        self.log_scale.copy_(-torch.log(std))
        self.shift.copy_(-mean / std)
        self.initialized.fill_(True)


class LeakyReLUFlow(Flow):
    """Leaky ReLU ``z = x`` for ``x >= 0``, ``z = a x`` for ``x < 0``, with a fixed slope ``a > 0``.

    Any shape ``[B, ...]``. ``log|det dz/dx| = log(a) * #{i : x_i < 0}`` per sample; the inverse
    divides the negative part by ``a``. Any positive ``a`` gives a bijection (``a > 1`` too).
    """

    def __init__(self, negative_slope: float = 0.1) -> None:
        super().__init__()
        if not negative_slope > 0:
            raise ValueError(f"LeakyReLUFlow needs a positive negative_slope to be invertible, got {negative_slope}")
        self.negative_slope = float(negative_slope)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._map(x, self.negative_slope)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._map(z, 1 / self.negative_slope)

    def _map(self, x: Tensor, slope: float) -> tuple[Tensor, Tensor]:
        """``x -> x`` or ``slope * x`` by sign; both directions are this map with ``a`` or ``1 / a``."""
        expect_input(x, f"LeakyReLUFlow(negative_slope={self.negative_slope:g})", dims=(2, 4))
        negative = x < 0
        y = torch.where(negative, slope * x, x)
        return y, math.log(slope) * sum_except_batch(negative.to(x.dtype))


def _sigmoid_with_log_det(x: Tensor) -> tuple[Tensor, Tensor]:
    """``sigmoid(x)`` and ``sum log sigmoid'(x) = sum [log sigmoid(x) + log sigmoid(-x)]``, stably."""
    log_det = sum_except_batch(-F.softplus(-x) - F.softplus(x))
    return torch.sigmoid(x), log_det


def _logit_with_log_det(y: Tensor) -> tuple[Tensor, Tensor]:
    """``logit(y) = log y - log(1 - y)`` and ``sum log logit'(y) = -sum [log y + log(1 - y)]``."""
    log_y, log_one_minus_y = torch.log(y), torch.log1p(-y)
    return log_y - log_one_minus_y, -sum_except_batch(log_y + log_one_minus_y)


class Sigmoid(Flow):
    """Elementwise logistic sigmoid ``z = 1 / (1 + exp(-x))``, from the reals to ``(0, 1)``.

    Any shape ``[B, ...]``. ``log|det dz/dx| = sum_i [log z_i + log(1 - z_i)]``. The inverse is the
    logit and needs ``z`` strictly inside ``(0, 1)``; it raises ``ValueError`` otherwise.
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        expect_input(x, "Sigmoid", dims=(2, 4))
        return _sigmoid_with_log_det(x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        expect_input(z, "Sigmoid.inverse", dims=(2, 4))
        expect_in_interval(z, "Sigmoid.inverse", 0.0, 1.0, closed=False)
        return _logit_with_log_det(z)


class Logit(Flow):
    """Logit preprocessing of images (RealNVP, Dinh et al. 2017): squeeze into ``[alpha, 1 - alpha]``, then logit.

    ``y = alpha + (1 - 2 alpha) x``, ``z = log y - log(1 - y)`` for ``x`` in ``[0, 1]`` (dequantised
    pixels), any shape ``[B, ...]``. Exact log-det:
    ``log|det dz/dx| = sum_i [log(1 - 2 alpha) - log y_i - log(1 - y_i)]``.
    The squeeze keeps ``z`` finite at ``x = 0`` and ``x = 1``; with ``alpha = 0`` this is the inverse
    of :class:`Sigmoid` and needs ``x`` strictly inside ``(0, 1)``. Values outside the domain raise
    ``ValueError`` rather than giving NaN.
    """

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        if not 0 <= alpha < 0.5:
            raise ValueError(f"Logit needs 0 <= alpha < 0.5, got alpha={alpha}")
        self.alpha = float(alpha)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        name = f"Logit(alpha={self.alpha:g})"
        expect_input(x, name, dims=(2, 4))
        expect_in_interval(x, name, 0.0, 1.0, closed=self.alpha > 0)
        z, log_det = _logit_with_log_det(self.alpha + (1 - 2 * self.alpha) * x)
        return z, log_det + math.prod(x.shape[1:]) * math.log1p(-2 * self.alpha)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        expect_input(z, f"Logit(alpha={self.alpha:g}).inverse", dims=(2, 4))
        y, log_det = _sigmoid_with_log_det(z)
        x = (y - self.alpha) / (1 - 2 * self.alpha)
        return x, log_det - math.prod(z.shape[1:]) * math.log1p(-2 * self.alpha)

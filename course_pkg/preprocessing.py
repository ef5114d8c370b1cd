"""Dequantization, and bits per dimension in the discrete space of 8-bit images (chapter 3).

A flow is a density on continuous values, while pixels are integers ``k`` in ``{0, ..., 255}^D``.
Uniform dequantization (Theis et al. 2016; RealNVP, Glow) adds noise ``u ~ U[0, 1)^D`` and
rescales, ``x = (k + u) / 256`` in ``[0, 1)^D``. A density ``p`` on ``[0, 1]^D`` then defines the
discrete model ``P(k) = integral over the bin of k of p(x) dx``, and by Jensen's inequality

    log P(k) >= E_u[ log p((k + u) / 256) ] - D log 256,

(the ``- D log 256`` is the log-det of the rescaling ``x = y / 256``: the bin of ``k`` has volume
``256^-D`` in ``x``). So ``-log p(x) + D log 256`` is an unbiased estimate of an upper bound on
``-log P(k)``, and the papers report it in bits per dimension:

    bpd = (-log p(x) + D log 256) / (D log 2).

A density that is uniform on ``[0, 1]^D`` (``log p = 0``) gives exactly 8 bits per dimension, the
cost of storing raw bytes. Logit preprocessing, ``y = logit(alpha + (1 - 2 alpha) x)``, is the
:class:`~course_pkg.flows.elementwise.Logit` flow: put it first in the model's transform and its
log-det makes ``log p(x)`` a density on ``[0, 1]^D``, as the formula needs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from course_pkg.distributions import NormalizingFlow
from course_pkg.flows._inputs import expect_in_interval


def dequantize(
    pixels: Tensor, num_bins: int = 256, generator: torch.Generator | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """Uniform dequantization ``x = (k + u) / num_bins``, ``u ~ U[0, 1)``: integers ``[B, ...]`` to ``[0, 1)``.

    ``pixels`` holds integers in ``{0, ..., num_bins - 1}`` (``uint8`` images, or a float tensor
    of whole numbers); ``x`` has ``dtype`` (default: torch's default float type) and the device of
    ``pixels``. Raises ``ValueError`` for values outside that range or not whole, such as images
    already scaled to ``[0, 1]``.
    """
    values = pixels.to(dtype or torch.get_default_dtype())
    _expect_pixels(values, num_bins)
    noise = torch.rand(values.shape, generator=generator, dtype=values.dtype, device=values.device)
    return (values + noise) / num_bins


def discrete_bits_per_dim(log_prob: Tensor, dimension: int, num_bins: int = 256) -> Tensor:
    """Bits per dimension in the discrete space from ``log p(x)`` of dequantized data in ``[0, 1]^D``.

    ``bpd = (-log p(x) + D log num_bins) / (D log 2)``, elementwise: ``log_prob`` ``[batch]`` (nats,
    a density on ``[0, 1]^D`` at ``x = (k + u) / num_bins``) gives ``[batch]``. Take the mean over a
    data set for the papers' figure. A uniform density (``log p = 0``) gives ``log2(num_bins)``.
    """
    if dimension < 1:
        raise ValueError(f"discrete_bits_per_dim needs a positive dimension, got {dimension}")
    return (-log_prob + dimension * math.log(num_bins)) / (dimension * math.log(2))


class DequantizedModel(NormalizingFlow):
    """A model of discrete data ``k`` in ``{0, ..., num_bins - 1}^D`` from a flow model ``p`` of ``x`` in ``[0, 1]^D``.

    ``log_prob(k) = log p((k + u) / num_bins) - D log num_bins`` with fresh noise ``u ~ U[0, 1)^D``
    at every call: a one-sample estimate of the lower bound on ``log P(k)`` of the module docstring,
    so ``nll`` is a bound in nats and ``bits_per_dim`` is the papers' figure in the 8-bit space. Use
    it as the model in training (``-log_prob`` is the loss) and to report results; ``sample`` draws
    ``x`` from ``p`` and returns the bins ``floor(num_bins x)`` as integers (``uint8`` for up to
    256 bins). It shares ``flow``'s transform and base (same parameters, same ``state_dict`` keys).

    ``k`` is ``[B, ...]`` integers, the shape ``flow`` takes: ``[B, 1, 28, 28]`` for MNIST.
    """

    def __init__(self, flow: NormalizingFlow, num_bins: int = 256) -> None:
        super().__init__(flow.transform, flow.base)
        if num_bins < 2:
            raise ValueError(f"DequantizedModel needs num_bins >= 2, got {num_bins}")
        self.num_bins = num_bins

    def log_prob(self, pixels: Tensor) -> Tensor:
        x = dequantize(pixels, self.num_bins, dtype=_floating_dtype(self))
        dimension = math.prod(pixels.shape[1:])
        return super().log_prob(x) - dimension * math.log(self.num_bins)

    @torch.no_grad()
    def sample(self, num_samples: int, temperature: float = 1.0) -> Tensor:
        x = super().sample(num_samples, temperature)
        bins = torch.floor(x * self.num_bins).clamp(0, self.num_bins - 1)
        return bins.to(torch.uint8 if self.num_bins <= 256 else torch.long)


def _expect_pixels(values: Tensor, num_bins: int) -> None:
    expect_in_interval(values, "dequantize (integer pixel values)", 0, num_bins - 1, closed=True)
    if not torch.equal(values, torch.round(values)):
        raise ValueError(
            f"dequantize expects whole numbers in {{0, ..., {num_bins - 1}}} (the raw pixels), got fractions: "
            "pass the integer images, not images already scaled to [0, 1]"
        )


def _floating_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of the first floating-point parameter or buffer of ``module`` (torch's default if none)."""
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()

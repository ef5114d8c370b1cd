"""Conditioner networks for coupling layers (an MLP for vectors, a small convolutional ResNet for images)
and the time-dependent vector field of a continuous flow.

A coupling layer never inverts its conditioner, so any network will do. Two choices matter:

- the **last layer starts at zero**, so a new coupling layer is exactly the identity and a deep
  stack of them starts as the identity too (training starts from the base distribution, not from
  a random warp of it);
- the networks are **smooth** (SiLU by default) and use **no batch statistics** (no BatchNorm), so
  every sample is transformed independently of the rest of the batch, and the Jacobian checks by
  central differences see no kinks.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _zero_init(layer: nn.Linear | nn.Conv2d) -> nn.Linear | nn.Conv2d:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class MLP(nn.Sequential):
    """Fully connected network ``[B, in_features] -> [B, out_features]`` with a zero-initialised output layer.

    ``Linear -> activation`` ``num_hidden_layers`` times (width ``hidden_features``), then a
    ``Linear`` whose weight and bias start at 0, so the network starts as the constant 0.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: int = 64,
        num_hidden_layers: int = 2,
        activation: type[nn.Module] = nn.SiLU,
    ) -> None:
        if num_hidden_layers < 1:
            raise ValueError(f"MLP needs at least one hidden layer, got num_hidden_layers={num_hidden_layers}")
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(num_hidden_layers):
            layers += [nn.Linear(width, hidden_features), activation()]
            width = hidden_features
        layers.append(_zero_init(nn.Linear(width, out_features)))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Pre-activation residual block ``h + conv(act(conv(act(h))))``, 3x3 convolutions, ``[B, C, H, W]`` in and out."""

    def __init__(self, channels: int, activation: type[nn.Module] = nn.SiLU) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            activation(),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            activation(),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
        )

    def forward(self, h: Tensor) -> Tensor:
        return h + self.residual(h)


class ResNet(nn.Sequential):
    """Small convolutional ResNet ``[B, in_channels, H, W] -> [B, out_channels, H, W]`` with a zero-initialised output.

    A 3x3 convolution to ``hidden_channels``, ``num_blocks`` :class:`ResidualBlock` s, an
    activation, and a 3x3 convolution to ``out_channels`` whose weight and bias start at 0.
    Padding keeps the height and width.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int = 32,
        num_blocks: int = 1,
        activation: type[nn.Module] = nn.SiLU,
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, hidden_channels, kernel_size=3, padding=1),
            *(ResidualBlock(hidden_channels, activation) for _ in range(num_blocks)),
            activation(),
            zero_conv(hidden_channels, out_channels),
        )


class GlowNet(nn.Sequential):
    """Glow's coupling network ``[B, in_channels, H, W] -> [B, out_channels, H, W]`` (Kingma & Dhariwal 2018, section 3.3).

    ``conv3x3 -> act -> conv1x1 -> act -> conv3x3``, the hidden layers ``hidden_channels`` wide and
    the last convolution zero-initialised (Glow's "zero initialisation", so every coupling starts
    as the identity). Glow uses ReLU and an ActNorm after each hidden convolution; this keeps the
    package's smooth SiLU and no normalisation, so that each sample is transformed on its own.
    """

    def __init__(
        self, in_channels: int, out_channels: int, hidden_channels: int = 64, activation: type[nn.Module] = nn.SiLU
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, hidden_channels, kernel_size=3, padding=1),
            activation(),
            nn.Conv2d(hidden_channels, hidden_channels, kernel_size=1),
            activation(),
            zero_conv(hidden_channels, out_channels),
        )


def zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 3x3 convolution (padding 1, so ``H`` and ``W`` are kept) whose weight and bias start at 0."""
    return _zero_init(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))


class TimeMLP(nn.Module):
    """Time-dependent vector field ``f(t, z) = MLP([z, t])``: ``t`` 0-dim or ``[B]``, ``z`` ``[B, features]`` -> ``[B, features]``.

    The time is appended to every sample as one more input feature: one time for the whole batch
    (an ODE solver's), or one per sample (flow matching's regression, :mod:`course_pkg.matching`). The activation is smooth
    (``tanh`` by default): a continuous flow trained through its exact trace ``tr(df/dz)``
    differentiates ``f`` twice. The output layer starts at zero, so a new flow is the identity.
    """

    def __init__(
        self,
        features: int,
        hidden_features: int = 64,
        num_hidden_layers: int = 2,
        activation: type[nn.Module] = nn.Tanh,
    ) -> None:
        super().__init__()
        self.features = features
        self.net = MLP(features + 1, features, hidden_features, num_hidden_layers, activation)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return self.net(torch.cat([z, t.reshape(-1, 1).expand(z.shape[0], 1)], dim=1))

"""The flow protocol, composition and inversion.

Direction contract (the *normalizing* direction, as in Glow and nflows): ``forward`` maps data
``x`` to latent ``z`` and returns ``log|det dz/dx|`` per sample; ``inverse`` maps ``z`` back to
``x`` and returns ``log|det dx/dz|``, which is minus the forward one.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


class Flow(nn.Module):
    """A bijection with a tractable log-determinant.

    ``forward(x) -> (z, log_det)`` with ``log_det[b] = log|det dz/dx|`` at sample ``b``;
    ``inverse(z) -> (x, log_det)`` with ``log_det[b] = log|det dx/dz|``.
    Inputs are ``[batch, features]`` or ``[batch, channels, height, width]``; ``log_det`` is
    ``[batch]``. No flow changes its input in place.
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class Sequential(Flow):
    """Composition ``z = f_K(... f_1(x))``; by the chain rule the log-dets add up.

    ``log|det dz/dx| = sum_k log|det df_k/dh_{k-1}|``, and the inverse runs the layers in
    reverse order.
    """

    def __init__(self, *flows: Flow | Iterable[Flow]) -> None:
        super().__init__()
        if len(flows) == 1 and not isinstance(flows[0], nn.Module):
            flows = tuple(flows[0])
        for flow in flows:
            if not isinstance(flow, Flow):
                raise TypeError(f"Sequential takes Flow layers, got {type(flow).__name__}")
        self.flows = nn.ModuleList(flows)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return _compose(self.flows, x, "forward")

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return _compose(reversed(self.flows), z, "inverse")

    def __len__(self) -> int:
        return len(self.flows)

    def __getitem__(self, index: int) -> Flow:
        return self.flows[index]


def _compose(flows: Iterable[Flow], h: Tensor, method: str) -> tuple[Tensor, Tensor]:
    log_det = h.new_zeros(h.shape[0])
    for flow in flows:
        h, layer_log_det = getattr(flow, method)(h)
        log_det = log_det + layer_log_det
    return h, log_det


class Inverse(Flow):
    """The inverse flow ``f^{-1}``: its ``forward`` is ``flow.inverse`` and vice versa.

    Turns a flow designed for fast sampling (say IAF) into one with a fast density, and back.
    """

    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.flow.inverse(x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.flow.forward(z)


def sum_except_batch(values: Tensor) -> Tensor:
    """Sum ``[batch, ...]`` to ``[batch]``: per-sample log-dets of elementwise maps."""
    return values.reshape(values.shape[0], -1).sum(dim=1)


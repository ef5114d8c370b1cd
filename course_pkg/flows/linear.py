"""Linear flows (chapter 2): permutations, an LU-decomposed linear layer, Glow's invertible 1x1 convolution.

A linear map ``z = W x + b`` has the constant Jacobian ``W``, so ``log|det dz/dx| = log|det W|`` for
every sample. A dense ``W`` costs ``O(d^3)`` for that determinant; writing ``W = P L U`` (fixed
permutation, unit lower triangular, upper triangular) brings it down to ``O(d)``:
``log|det W| = sum_i log|U_ii|``.

Direction as in :class:`~course_pkg.flows.base.Flow`: ``forward`` maps data ``x`` to latent ``z``
and returns ``log|det dz/dx|``; ``inverse`` maps back and returns ``log|det dx/dz|``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from course_pkg.flows._inputs import expect_input
from course_pkg.flows.base import Flow


class Permutation(Flow):
    """Reorder the features (dim 1): ``z[:, i] = x[:, permutation[i]]``.

    ``x`` is ``[B, C]`` or ``[B, C, H, W]`` (for images the channels are permuted, the same way at
    every pixel). A permutation matrix has determinant ``+-1``, so ``log_det`` is 0. Between coupling
    layers it lets every feature be transformed in turn. Build one with ``Permutation([2, 0, 1])``,
    ``Permutation.reverse(C)`` or ``Permutation.random(C, seed=0)``.
    """

    def __init__(self, permutation: Tensor | Sequence[int]) -> None:
        super().__init__()
        permutation = torch.as_tensor(permutation, dtype=torch.long)
        size = permutation.numel()
        if permutation.dim() != 1 or not torch.equal(permutation.sort().values, torch.arange(size)):
            raise ValueError(
                f"Permutation needs each of 0, ..., n-1 exactly once (a 1-D sequence), got {permutation.tolist()}"
            )
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    @classmethod
    def reverse(cls, num_features: int) -> Permutation:
        """The reversal ``z[:, i] = x[:, C - 1 - i]`` (RealNVP, Glow's simplest choice)."""
        return cls(torch.arange(num_features - 1, -1, -1))

    @classmethod
    def random(cls, num_features: int, seed: int | None = None) -> Permutation:
        """A uniformly random permutation, reproducible when ``seed`` is given."""
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        return cls(torch.randperm(num_features, generator=generator))

    @property
    def num_features(self) -> int:
        return self.permutation.numel()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._reorder(x, self.permutation)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._reorder(z, self.inverse_permutation)

    def _reorder(self, x: Tensor, order: Tensor) -> tuple[Tensor, Tensor]:
        expect_input(x, f"Permutation of {self.num_features} features", dims=(2, 4), size=self.num_features)
        return x.index_select(1, order), x.new_zeros(x.shape[0])


class LUWeight(nn.Module):
    """An invertible ``[d, d]`` matrix ``W = P L U`` whose log-determinant costs ``O(d)`` (Glow, section 3.2).

    ``P`` is a fixed permutation matrix, ``L`` unit lower triangular (free strictly-lower entries),
    ``U`` upper triangular with free strictly-upper entries and diagonal ``sign * exp(log_scale)``,
    ``sign`` a fixed ``+-1`` vector. So ``log|det W| = sum_i log_scale_i`` and ``W`` is invertible
    for every value of the parameters. Starts at a random orthogonal matrix: ``P, L, U`` from
    ``torch.linalg.lu`` of the ``Q`` of a QR decomposition of a Gaussian matrix.

    The shared parameterisation of :class:`LULinear` and ``InvertibleConv1x1(lu=True)``; it offers
    ``matrix()``, ``log_abs_det()`` and ``solve(columns)``, as :class:`DenseWeight` does.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        permutation, lower, upper = torch.linalg.lu(_random_orthogonal(size))
        diagonal = torch.diagonal(upper)
        self.register_buffer("permutation_matrix", permutation)
        self.register_buffer("sign", torch.sign(diagonal))
        self.lower = nn.Parameter(torch.tril(lower, -1))
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_scale = nn.Parameter(torch.log(diagonal.abs()))

    def lower_triangular(self) -> Tensor:
        """``L``: ones on the diagonal, the parameter ``lower`` below it; entries above are ignored."""
        eye = torch.eye(self.lower.shape[0], dtype=self.lower.dtype, device=self.lower.device)
        return torch.tril(self.lower, -1) + eye

    def upper_triangular(self) -> Tensor:
        """``U``: ``sign * exp(log_scale)`` on the diagonal, the parameter ``upper`` above it."""
        return torch.triu(self.upper, 1) + torch.diag(self.sign * torch.exp(self.log_scale))

    def matrix(self) -> Tensor:
        """The assembled ``W = P L U``, ``[d, d]``."""
        return self.permutation_matrix @ self.lower_triangular() @ self.upper_triangular()

    def log_abs_det(self) -> Tensor:
        """``log|det W| = sum_i log_scale_i`` (``det P = +-1``, ``det L = 1``), a 0-dim tensor."""
        return self.log_scale.sum()

    def solve(self, columns: Tensor) -> Tensor:
        """``W^{-1} columns`` for ``columns`` ``[d, N]``: ``U^{-1} L^{-1} P^T columns`` by two triangular solves."""
        permuted = self.permutation_matrix.T @ columns
        below = torch.linalg.solve_triangular(self.lower_triangular(), permuted, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(self.upper_triangular(), below, upper=True)


class DenseWeight(nn.Module):
    """An unconstrained ``[d, d]`` matrix ``W`` (the plain Glow 1x1 convolution), started orthogonal.

    ``log|det W|`` by ``slogdet`` costs ``O(d^3)``, and nothing keeps ``W`` away from singular
    matrices during training; :class:`LUWeight` fixes both. Same interface as :class:`LUWeight`.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(_random_orthogonal(size))

    def matrix(self) -> Tensor:
        return self.weight

    def log_abs_det(self) -> Tensor:
        return torch.linalg.slogdet(self.weight).logabsdet

    def solve(self, columns: Tensor) -> Tensor:
        return torch.linalg.solve(self.weight, columns)


def _random_orthogonal(size: int) -> Tensor:
    """A random orthogonal ``[size, size]`` matrix (``|det| = 1``): ``Q`` of the QR of a Gaussian matrix."""
    orthogonal, _ = torch.linalg.qr(torch.randn(size, size))
    return orthogonal


class LULinear(Flow):
    """Linear flow ``z = W x + b`` with ``W = P L U`` (see :class:`LUWeight`), ``x``, ``z`` ``[B, d]``.

    ``log|det dz/dx| = sum_i log_scale_i``, the same for every sample and ``O(d)`` to compute
    (never a ``slogdet`` of ``W``). The inverse ``x = U^{-1} L^{-1} P^T (z - b)`` takes two
    triangular solves. Starts at a random orthogonal matrix with zero bias.

    >>> layer = LULinear(4)
    >>> x = torch.randn(10, 4)
    >>> z, log_det = layer(x)
    >>> x_again, inverse_log_det = layer.inverse(z)
    >>> bool(torch.allclose(x_again, x, atol=1e-5)), bool(torch.allclose(log_det, -inverse_log_det))
    (True, True)
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = features
        self.weight = LUWeight(features)
        self.bias = nn.Parameter(torch.zeros(features))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._expect(x)
        z = x @ self.weight.matrix().T + self.bias
        return z, self.weight.log_abs_det() * x.new_ones(x.shape[0])

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        self._expect(z)
        x = self.weight.solve((z - self.bias).T).T
        return x, -self.weight.log_abs_det() * z.new_ones(z.shape[0])

    def _expect(self, x: Tensor) -> None:
        expect_input(x, f"LULinear({self.features})", dims=(2,), size=self.features)


class InvertibleConv1x1(Flow):
    """Glow's invertible 1x1 convolution: the same channel mixing ``z[:, :, h, w] = W x[:, :, h, w]`` at every pixel.

    ``x``, ``z`` ``[B, C, H, W]``, ``W`` ``[C, C]``. The Jacobian is block diagonal with ``H W``
    copies of ``W``, so ``log|det dz/dx| = H W log|det W|``: ``H W slogdet(W)`` for the plain
    weight (``lu=False``, :class:`DenseWeight`), ``H W sum_i log_scale_i`` for ``lu=True``
    (:class:`LUWeight`, the same parameterisation as :class:`LULinear`). Starts at a random orthogonal matrix.
    """

    def __init__(self, num_channels: int, lu: bool = False) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.weight = LUWeight(num_channels) if lu else DenseWeight(num_channels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._expect(x)
        z = torch.einsum("ij,bjhw->bihw", self.weight.matrix(), x)
        return z, self._log_det(x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        self._expect(z)
        batch, channels, height, width = z.shape
        columns = z.transpose(0, 1).reshape(channels, -1)  # [C, B H W]: one column per pixel
        x = self.weight.solve(columns).reshape(channels, batch, height, width).transpose(0, 1)
        return x, -self._log_det(z)

    def _log_det(self, x: Tensor) -> Tensor:
        height, width = x.shape[2:]
        return height * width * self.weight.log_abs_det() * x.new_ones(x.shape[0])

    def _expect(self, x: Tensor) -> None:
        lu = ", lu=True" if isinstance(self.weight, LUWeight) else ""
        expect_input(x, f"InvertibleConv1x1({self.num_channels}{lu})", dims=(4,), size=self.num_channels)

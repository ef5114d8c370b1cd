"""Hidden checks of ex01_change_of_variables (instructor-only).

Ground truth comes from closed forms in float64 (their agreement with autograd is tested), on maps the
notebook never shows: rotations, reflections (negative determinants), elementwise
nonlinearities and a small random invertible network, at several sizes and seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from course_pkg import testing as reference
from course_grading.engine.grader import Registry

REGISTRY = Registry()
check = REGISTRY.check

_JACOBIAN_HELPERS = [
    reference.numerical_jacobian,
    reference.numerical_batch_jacobian,
    reference.autograd_batch_jacobian,
    reference.log_abs_det,
]
REGISTRY.forbidden = {
    "numerical_jacobian": _JACOBIAN_HELPERS,
    "log_abs_det_jacobian": _JACOBIAN_HELPERS,
    "flow_log_prob": _JACOBIAN_HELPERS,
}
SIZES_AND_SEEDS = [(1, 0), (2, 1), (3, 2), (5, 3)]
TOLERANCE = 1e-6


# ------------------------------------------------------------------------- the maps under test


def random_rotation(d: int, generator: torch.Generator) -> Tensor:
    """An orthogonal matrix with determinant +1."""
    q, r = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_reflection(d: int, generator: torch.Generator) -> Tensor:
    """An orthogonal matrix with determinant -1."""
    q = random_rotation(d, generator)
    q[:, 0] = -q[:, 0]
    return q


def random_matrix(d: int, generator: torch.Generator) -> Tensor:
    """A dense, non-symmetric, well-conditioned matrix with a negative determinant."""
    scales = torch.rand(d, generator=generator, dtype=torch.float64) + 0.5
    return random_rotation(d, generator) @ torch.diag(scales) @ random_reflection(d, generator)


class Map(NamedTuple):
    """A map of one sample (1-D ``x``) and its Jacobian in closed form."""

    name: str
    f: Callable[[Tensor], Tensor]
    jacobian: Callable[[Tensor], Tensor]


def invertible_network(d: int, generator: torch.Generator) -> Map:
    """``x -> A (x + 0.5 tanh(W x + b))`` with ``|W| < 1``: a contracting residual map, so invertible.

    Its Jacobian is ``A (I + 0.5 diag(1 - tanh^2(W x + b)) W)``.
    """
    weight = torch.randn(d, d, generator=generator, dtype=torch.float64)
    weight = 0.9 * weight / torch.linalg.matrix_norm(weight, ord=2)
    bias = torch.randn(d, generator=generator, dtype=torch.float64)
    mixing = random_matrix(d, generator)
    identity = torch.eye(d, dtype=torch.float64)

    def f(x: Tensor) -> Tensor:
        return mixing @ (x + 0.5 * torch.tanh(weight @ x + bias))

    def jacobian(x: Tensor) -> Tensor:
        slope = 1 - torch.tanh(weight @ x + bias) ** 2
        return mixing @ (identity + 0.5 * slope[:, None] * weight)

    return Map("an invertible residual network", f, jacobian)


def elementwise_after_matrix(d: int, generator: torch.Generator) -> Map:
    """``x -> g(M x)`` with ``g(u) = sinh(u) + u^3 / 3`` increasing; Jacobian ``diag(cosh(u) + u^2) M``."""
    mixing = random_matrix(d, generator)

    def f(x: Tensor) -> Tensor:
        u = mixing @ x
        return torch.sinh(u) + u**3 / 3

    def jacobian(x: Tensor) -> Tensor:
        u = mixing @ x
        return (torch.cosh(u) + u**2)[:, None] * mixing

    return Map("an elementwise map after a dense matrix", f, jacobian)


def nonlinear_maps(d: int, generator: torch.Generator) -> list[Map]:
    """Maps whose Jacobians are neither diagonal nor triangular."""
    return [invertible_network(d, generator), elementwise_after_matrix(d, generator)]


def point(d: int, generator: torch.Generator, batch: int | None = None) -> Tensor:
    shape = (d,) if batch is None else (batch, d)
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def expect_close(what: str, actual, expected: Tensor, tolerance: float = TOLERANCE) -> None:
    reference.assert_close(what, actual, expected, atol=tolerance, rtol=tolerance)


def expect_tensor(what: str, value, shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> None:
    assert isinstance(value, Tensor), f"{what}: expected a torch.Tensor, got {type(value).__name__}"
    assert tuple(value.shape) == shape, f"{what}: expected shape {shape}, got {tuple(value.shape)}"
    assert value.dtype == dtype, f"{what}: expected dtype {dtype}, got {value.dtype}"


# ---------------------------------------------------------------------------- numerical_jacobian


@check("numerical_jacobian")
def jacobian_shape_dtype_and_input_untouched(numerical_jacobian) -> None:
    """returns a d x d float64 tensor and leaves x unchanged"""
    for d, seed in SIZES_AND_SEEDS:
        generator = torch.Generator().manual_seed(seed)
        x = point(d, generator)
        x_before = x.clone()
        jacobian = numerical_jacobian(torch.tanh, x)
        expect_tensor(f"Jacobian for d={d}", jacobian, (d, d))
        assert torch.equal(x, x_before), "x was modified in place; perturb a copy instead"


@check("numerical_jacobian")
def jacobian_of_linear_maps(numerical_jacobian) -> None:
    """J[i, j] = df_i/dx_j for rotations, reflections and dense matrices"""
    for d, seed in SIZES_AND_SEEDS:
        generator = torch.Generator().manual_seed(seed)
        for name, matrix in [("rotation", random_rotation(d, generator)),
                             ("reflection", random_reflection(d, generator)),
                             ("dense matrix", random_matrix(d, generator))]:
            jacobian = numerical_jacobian(lambda x: matrix @ x, point(d, generator))
            expect_close(f"Jacobian of x -> A x ({name}, d={d}) against A", jacobian, matrix)


@check("numerical_jacobian")
def jacobian_of_nonlinear_maps(numerical_jacobian) -> None:
    """matches the Jacobians of nonlinear maps"""
    for d, seed in SIZES_AND_SEEDS:
        generator = torch.Generator().manual_seed(seed)
        for name, f, jacobian in nonlinear_maps(d, generator):
            x = point(d, generator)
            expect_close(f"Jacobian of {name} (d={d})", numerical_jacobian(f, x), jacobian(x))


@check("numerical_jacobian")
def jacobian_uses_central_differences_with_eps(numerical_jacobian) -> None:
    """uses central differences with the given eps"""
    x = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    for eps in (1e-2, 1e-3):
        # For x**3 the central difference is exactly 3 x^2 + eps^2: it shows which eps and scheme ran.
        expected = torch.diag(3 * x**2 + eps**2)
        expect_close(f"Jacobian of x**3 with eps={eps:g}", numerical_jacobian(lambda v: v**3, x, eps=eps), expected, 1e-9)


# -------------------------------------------------------------------------- log_abs_det_jacobian


@check("log_abs_det_jacobian")
def log_det_is_a_scalar_tensor(log_abs_det_jacobian) -> None:
    """returns a 0-dim float64 tensor"""
    for d, seed in SIZES_AND_SEEDS:
        value = log_abs_det_jacobian(torch.tanh, point(d, torch.Generator().manual_seed(seed)))
        expect_tensor(f"log|det J| for d={d}", value, ())


@check("log_abs_det_jacobian")
def log_det_of_volume_preserving_and_scaling_maps(log_abs_det_jacobian) -> None:
    """is 0 for rotations and sum(log|s|) for x -> s * x"""
    for d, seed in SIZES_AND_SEEDS:
        generator = torch.Generator().manual_seed(seed)
        rotation = random_rotation(d, generator)
        expect_close(f"log|det| of a rotation (d={d})",
                     log_abs_det_jacobian(lambda x: rotation @ x, point(d, generator)), torch.tensor(0.0, dtype=torch.float64))
        scales = torch.rand(d, generator=generator, dtype=torch.float64) * 3 + 0.2
        expect_close(f"log|det| of x -> s * x (d={d})",
                     log_abs_det_jacobian(lambda x: scales * x, point(d, generator)), scales.log().sum())


@check("log_abs_det_jacobian")
def log_det_with_negative_determinants(log_abs_det_jacobian) -> None:
    """takes the absolute value: reflections and orientation-reversing maps"""
    for d, seed in SIZES_AND_SEEDS:
        generator = torch.Generator().manual_seed(seed)
        matrix = random_matrix(d, generator)  # det < 0
        expected = torch.linalg.slogdet(matrix).logabsdet
        expect_close(f"log|det| of x -> A x with det A = {torch.linalg.det(matrix).item():.3g} (d={d})",
                     log_abs_det_jacobian(lambda x: matrix @ x, point(d, generator)), expected)
        expect_close(f"log|det| of x -> -x (d={d})",
                     log_abs_det_jacobian(lambda x: -x, point(d, generator)), torch.tensor(0.0, dtype=torch.float64))


@check("log_abs_det_jacobian")
def log_det_of_nonlinear_maps(log_abs_det_jacobian) -> None:
    """matches log|det J| of nonlinear maps"""
    for d, seed in SIZES_AND_SEEDS:
        generator = torch.Generator().manual_seed(seed)
        for name, f, jacobian in nonlinear_maps(d, generator):
            x = point(d, generator)
            expected = torch.linalg.slogdet(jacobian(x)).logabsdet
            expect_close(f"log|det J| of {name} (d={d})", log_abs_det_jacobian(f, x), expected)


# --------------------------------------------------------------------------------- flow_log_prob


def standard_normal_log_prob(z: Tensor) -> Tensor:
    return -0.5 * (z**2).sum(dim=1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


def batched(f):
    """Apply a map of one sample to every row of a batch."""
    return lambda x: torch.stack([f(row) for row in x])


def true_flow_log_prob(map_: Map, x: Tensor) -> Tensor:
    log_dets = torch.stack([torch.linalg.slogdet(map_.jacobian(row)).logabsdet for row in x])
    return standard_normal_log_prob(batched(map_.f)(x)) + log_dets


@check("flow_log_prob")
def log_prob_shape_and_dtype(flow_log_prob) -> None:
    """returns a [batch] float64 tensor"""
    for (d, seed), batch in zip(SIZES_AND_SEEDS, (1, 4, 7, 3)):
        generator = torch.Generator().manual_seed(seed)
        value = flow_log_prob(torch.tanh, standard_normal_log_prob, point(d, generator, batch))
        expect_tensor(f"log p(x) for a batch of {batch} in d={d}", value, (batch,))


@check("flow_log_prob")
def log_prob_of_a_gaussian_pushed_through_a_linear_map(flow_log_prob) -> None:
    """equals the closed-form density when z = A x + b with a dense A"""
    for d, seed in SIZES_AND_SEEDS:
        generator = torch.Generator().manual_seed(seed)
        matrix, shift = random_matrix(d, generator), point(d, generator)
        x = point(d, generator, batch=6)
        # x = A^{-1}(z - b) with z ~ N(0, I) is Gaussian with mean -A^{-1} b and covariance (A^T A)^{-1}.
        gaussian = torch.distributions.MultivariateNormal(
            -torch.linalg.solve(matrix, shift), precision_matrix=matrix.T @ matrix)
        actual = flow_log_prob(lambda v: v @ matrix.T + shift, standard_normal_log_prob, x)
        expect_close(f"log p(x) for z = A x + b (d={d})", actual, gaussian.log_prob(x))


@check("flow_log_prob")
def log_prob_through_nonlinear_maps(flow_log_prob) -> None:
    """adds log|det J| of full (non-triangular) Jacobians of nonlinear maps"""
    for d, seed in SIZES_AND_SEEDS:
        generator = torch.Generator().manual_seed(seed)
        for map_ in nonlinear_maps(d, generator):
            x = point(d, generator, batch=5)
            actual = flow_log_prob(batched(map_.f), standard_normal_log_prob, x)
            expect_close(f"log p(x) through {map_.name} (d={d})", actual, true_flow_log_prob(map_, x))


@check("flow_log_prob")
def log_prob_keeps_samples_independent(flow_log_prob) -> None:
    """treats every sample on its own: changing one leaves the others' log p unchanged"""
    d = 3
    generator = torch.Generator().manual_seed(7)
    f = invertible_network(d, generator).f
    x = point(d, generator, batch=6)
    before = flow_log_prob(batched(f), standard_normal_log_prob, x)
    changed = x.clone()
    changed[2] = changed[2] * 3 + 1
    after = flow_log_prob(batched(f), standard_normal_log_prob, changed)
    keep = [0, 1, 3, 4, 5]
    expect_close("log p of the samples that did not change", after[keep], before[keep])

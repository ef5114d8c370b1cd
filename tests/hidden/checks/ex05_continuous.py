"""Hidden checks of ex05_continuous (instructor-only).

A continuous flow moves each point along a vector field ``f(t, z)``, and its log-determinant obeys
the instantaneous change of variables ``d log|det dz(t)/dx| / dt = tr(df/dz)``. The checks test
the mathematics rather than any way of writing it: the divergence against the trace of a
numerical Jacobian (central differences in float64), Hutchinson's estimate against
``noise^T J noise`` for a fixed noise and against the trace on average, the integrated state
against the classical RK4 scheme and the closed-form solution of a linear field, and the
integrated log-det against the log-determinant of the numerical Jacobian of the whole map
``x -> z``. Every field is random, mixes the features and depends on ``t``. Hutchinson's
estimator must cost one vector-Jacobian product: the backward passes through the field's output
are counted by a counting identity (an ``autograd.Function``) on that output, which
``torch.autograd.grad``, ``torch.func.vjp`` and ``torch.autograd.functional.vjp`` all go through once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import torchdiffeq
from course_grading.engine.expectations import (
    DTYPES,
    TOLERANCE,
    defined_in,
    expect_close,
    expect_correct_parameter_gradients,
    expect_input_untouched,
    expect_samples_independent,
    expect_tensor,
    single_threaded_checks,
)
from course_grading.engine.grader import Registry
from course_pkg import ode
from course_pkg import testing as reference
from course_pkg.flows import continuous

# ------------------------------------------------------------------- what a submission may not use
# Every public class and function of course_pkg's continuous flows and ODE solvers (divergence, the
# probes, CNF, odeint, rk4_step, ...), and torchdiffeq's solvers.
REFERENCE_CODE = [*defined_in(continuous, ode), torchdiffeq.odeint, torchdiffeq.odeint_adjoint]

REGISTRY = Registry()
REGISTRY.forbidden = {
    "exact_divergence": REFERENCE_CODE,
    "hutchinson_divergence": REFERENCE_CODE,
    "cnf_forward": REFERENCE_CODE,
}
check = single_threaded_checks(REGISTRY)

SIZES = (1, 2, 5)  # features of the fields the checks build
TIMES = (0.0, 0.7)
DRAWS = 4000  # noise draws in the check of the estimator's mean
STANDARD_ERRORS = 5.0  # how far, in standard errors of that mean, it may be from the trace
# (start, end, steps) of the integrations: forwards and backwards in time, several step sizes |h| <= 1/20
INTERVALS = ((0.0, 1.0, 20), (0.5, 2.0, 30), (1.0, 0.0, 25), (0.0, 0.35, 7))
# The scheme itself, written in another order of the same operations: only rounding differs.
SAME_SCHEME = 1e-9
# RK4's global error is C h^4. With |h| <= 1/20 (h^4 = 6.25e-6) and the fields below (|df/dz| <= 5),
# z and the integrated log-det are within 1.2e-6 of the solution with 400 steps (C <= 0.2), and the
# log-det within 1.1e-6 of log|det| of the numerical Jacobian of the discrete map: 1e-5 leaves a margin
# of 8 and still fails an Euler step (error O(h), about 1e-2) or stages at the wrong times (O(h)).
RK4_ERROR = 1e-5


# ------------------------------------------------------------------------------------- helpers


class TimeField(nn.Module):
    """``f(t, z) = tanh(z W1^T + t c + b) W2^T``: smooth, time-dependent, every output mixing every feature.

    ``t`` 0-dim, ``z`` ``[B, D]`` -> ``[B, D]``, sample by sample.
    """

    def __init__(self, features: int, generator: torch.Generator, dtype: torch.dtype = torch.float64,
                 hidden: int = 8, scale: float = 0.6) -> None:
        super().__init__()

        def random(*shape: int, factor: float = 1.0) -> nn.Parameter:
            return nn.Parameter((factor * torch.randn(*shape, generator=generator, dtype=torch.float64)).to(dtype))

        self.w1 = random(hidden, features, factor=scale)
        self.b = random(hidden, factor=scale)
        self.c = random(hidden, factor=2 * scale)
        self.w2 = random(features, hidden, factor=scale)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return torch.tanh(z @ self.w1.T + t * self.c + self.b) @ self.w2.T


class LinearTimeField(nn.Module):
    """``f(t, z) = (1 + 0.8 cos 3t) z A^T``: its flow is ``z(t1) = exp(C A) z(t0)`` with
    ``C = int_t0^t1 (1 + 0.8 cos 3t) dt``, and ``log|det| = C tr(A)``."""

    def __init__(self, features: int, generator: torch.Generator) -> None:
        super().__init__()
        self.a = 0.5 * torch.randn(features, features, generator=generator, dtype=torch.float64)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return (1 + 0.8 * torch.cos(3 * t)) * (z @ self.a.T)

    def flow(self, x: Tensor, t0: float, t1: float) -> tuple[Tensor, Tensor]:
        c = (t1 - t0) + 0.8 / 3 * (math.sin(3 * t1) - math.sin(3 * t0))
        return x @ torch.linalg.matrix_exp(c * self.a).T, torch.full((x.shape[0],), c * torch.trace(self.a).item(),
                                                                     dtype=x.dtype)


def time(value: float, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.tensor(value, dtype=dtype)


def fields(seed: int, dtype: torch.dtype = torch.float64):
    """``(features, field)`` for every size, a new random field each."""
    generator = torch.Generator().manual_seed(seed)
    return [(features, TimeField(features, generator, dtype)) for features in SIZES]


def jacobian(f: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """Per-sample numerical Jacobian ``[B, D, D]``, with autograd on for code that needs it."""
    def with_grad(v: Tensor) -> Tensor:
        with torch.enable_grad():
            return f(v).detach()
    return reference.numerical_batch_jacobian(with_grad, z)


def trace(jac: Tensor) -> Tensor:
    return jac.diagonal(dim1=1, dim2=2).sum(dim=1)


def call_divergence(divergence: Callable, what: str, *args: Tensor) -> Tensor:
    """``divergence(f, t, z, ...)`` on copies of the tensors, checked to be ``[B]`` of z's dtype."""
    f, t, z, *rest = args
    value = divergence(f, t.clone(), z.clone(), *(r.clone() for r in rest))
    expect_tensor(what, value, (z.shape[0],), z.dtype)
    return value


class AsFlow(nn.Module):
    """A divergence as a flow layer ``z -> (z, divergence)``, for the shared expectations of flows."""

    def __init__(self, divergence: Callable, field: nn.Module, t: Tensor, noise: Tensor | None = None) -> None:
        super().__init__()
        self.divergence, self.field, self.t, self.noise = divergence, field, t, noise

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        noise = () if self.noise is None else (self.noise.to(z.dtype),)
        return z, self.divergence(self.field, self.t.to(z.dtype), z, *noise)


def expect_divergence_shapes_and_independence(divergence: Callable, with_noise: bool) -> None:
    """``[B]`` of z's dtype, z and noise untouched, samples independent and different from each other."""
    for dtype in DTYPES:
        for features, field in fields(11, dtype):
            z = torch.randn(6, features, dtype=dtype)
            noise = torch.randn(6, features, dtype=dtype) if with_noise else None
            t = time(0.4, dtype)
            rest = () if noise is None else (noise,)
            before = [z.clone(), *(r.clone() for r in rest)]
            value = divergence(field, t, z, *rest)
            for tensor, tensor_before in zip((z, *rest), before):
                expect_input_untouched(tensor, tensor_before, "the divergence")
            expect_tensor(f"divergence of a {features}-feature field, {dtype}", value, (6,), dtype)
            assert (value - value[0]).abs().max().item() > 1e-4, (
                f"divergence of a {features}-feature field ({dtype}): expected different values for different "
                f"samples, got {value[0].item():.6g} for all of them: compute the trace per sample, not over the batch")
            expect_samples_independent(AsFlow(divergence, field, t, noise), z, TOLERANCE[dtype])


def expect_divergence_differentiable(divergence: Callable, with_noise: bool) -> None:
    """Gradients of the divergence with respect to the field's parameters match central differences."""
    for features, field in fields(12)[:2] + fields(13)[2:]:
        z = torch.randn(3, features, dtype=torch.float64)
        noise = torch.randn(3, features, dtype=torch.float64) if with_noise else None
        expect_correct_parameter_gradients(AsFlow(divergence, field, time(0.3), noise), z)


# ------------------------------------------------------------------------------ exact_divergence


@check("exact_divergence")
def exact_divergence_matches_numerical_jacobian(exact_divergence) -> None:
    """equals the trace of the numerical Jacobian (float64) per sample, for random time-dependent fields that mix the features, d in {1, 2, 5}"""
    for features, field in fields(1):
        z = torch.randn(5, features, dtype=torch.float64)
        for t in TIMES:
            expected = trace(jacobian(lambda v: field(time(t), v), z))
            expect_close(f"divergence of a {features}-feature field at t = {t:g}, against the trace of its numerical "
                         "Jacobian", call_divergence(exact_divergence, "exact_divergence", field, time(t), z),
                         expected, 1e-6)


@check("exact_divergence")
def exact_divergence_shapes_and_independence(exact_divergence) -> None:
    """shape [batch] and z's dtype (float32 and float64), z not changed in place, each sample's divergence its own"""
    expect_divergence_shapes_and_independence(exact_divergence, with_noise=False)


@check("exact_divergence")
def exact_divergence_is_differentiable(exact_divergence) -> None:
    """differentiable: gradients of the divergence with respect to the field's parameters match finite differences"""
    expect_divergence_differentiable(exact_divergence, with_noise=False)


# ------------------------------------------------------------------------- hutchinson_divergence


@dataclass
class Products:
    """What the counting identity saw: one entry per backward pass through the field's output."""

    batched: list[bool]


class CountingIdentity(torch.autograd.Function):
    """The identity on a field's output whose backward records each pass (and whether it ran under vmap)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(velocity: Tensor, products: Products) -> Tensor:
        return velocity.clone()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.products = inputs[1]

    @staticmethod
    def backward(ctx, grad: Tensor):
        ctx.products.batched.append(torch._C._functorch.is_batchedtensor(grad))
        return grad, None


def counted(field: nn.Module, products: Products) -> Callable[[Tensor, Tensor], Tensor]:
    return lambda t, z: CountingIdentity.apply(field(t, z), products)


@check("hutchinson_divergence")
def hutchinson_exact_for_a_fixed_noise(hutchinson_divergence) -> None:
    """for a given noise, equals noise^T J noise per sample with J the numerical Jacobian (float64), Gaussian and Rademacher noise, d in {1, 2, 5}"""
    for features, field in fields(2):
        z = torch.randn(5, features, dtype=torch.float64)
        for t in TIMES:
            jac = jacobian(lambda v: field(time(t), v), z)
            for kind, noise in [("Gaussian", torch.randn_like(z)), ("Rademacher", torch.randint_like(z, 2) * 2 - 1)]:
                expected = torch.einsum("bi,bij,bj->b", noise, jac, noise)
                value = call_divergence(hutchinson_divergence, "hutchinson_divergence", field, time(t), z, noise)
                expect_close(f"estimate for a {features}-feature field at t = {t:g} with {kind} noise, against "
                             "noise^T J noise (J the numerical Jacobian)", value, expected, 1e-6)


@check("hutchinson_divergence")
def hutchinson_is_unbiased(hutchinson_divergence) -> None:
    """its mean over 4000 Rademacher noise draws is within 5 standard errors of the trace of the numerical Jacobian"""
    for features, field in fields(3):
        points = torch.randn(3, features, dtype=torch.float64)
        expected = trace(jacobian(lambda v: field(time(0.5), v), points))
        z = points.repeat_interleave(DRAWS, dim=0)
        noise = torch.randint_like(z, 2) * 2 - 1
        estimates = call_divergence(hutchinson_divergence, "hutchinson_divergence", field, time(0.5), z, noise)
        estimates = estimates.detach().view(3, DRAWS)
        allowed = STANDARD_ERRORS * estimates.std(dim=1) / math.sqrt(DRAWS) + 1e-9
        error = (estimates.mean(dim=1) - expected).abs()
        worst = int((error - allowed).argmax())
        assert (error <= allowed).all(), (
            f"mean of {DRAWS} estimates for a {features}-feature field: expected the trace {expected[worst].item():.6g} "
            f"within {allowed[worst].item():.3g} ({STANDARD_ERRORS:g} standard errors), got "
            f"{estimates.mean(dim=1)[worst].item():.6g}: the estimate is noise^T J noise")


@check("hutchinson_divergence")
def hutchinson_takes_one_vector_jacobian_product(hutchinson_divergence) -> None:
    """one vector-Jacobian product per call, whatever d: one backward pass through the field's output, and the Jacobian never formed"""
    generator = torch.Generator().manual_seed(4)
    for features in (1, 3, 6):
        products = Products([])
        z = torch.randn(5, features, dtype=torch.float64)
        field = counted(TimeField(features, generator), products)
        hutchinson_divergence(field, time(0.2), z, torch.randn_like(z))
        assert products.batched, (
            f"{features} features: expected one vector-Jacobian product through the field's output, got none: "
            "differentiate f(t, z) itself (torch.autograd.grad or torch.func.vjp)")
        assert not any(products.batched), (
            f"{features} features: expected one vector-Jacobian product, got a batch of them at once (under vmap): "
            "that forms the Jacobian; pull the noise back once, noise^T J")
        assert len(products.batched) == 1, (
            f"{features} features: expected one vector-Jacobian product, got {len(products.batched)} backward passes "
            "through the field's output: one torch.autograd.grad with grad_outputs=noise gives noise^T J for all samples")


@check("hutchinson_divergence")
def hutchinson_shapes_and_independence(hutchinson_divergence) -> None:
    """shape [batch] and z's dtype (float32 and float64), z and noise not changed in place, each sample's estimate its own"""
    expect_divergence_shapes_and_independence(hutchinson_divergence, with_noise=True)


@check("hutchinson_divergence")
def hutchinson_is_differentiable(hutchinson_divergence) -> None:
    """differentiable: gradients of the estimate with respect to the field's parameters match finite differences"""
    expect_divergence_differentiable(hutchinson_divergence, with_noise=True)


# ---------------------------------------------------------------------------------- cnf_forward


def rk4(field: Callable[[Tensor, Tensor], Tensor], x: Tensor, t0: float, t1: float, steps: int) -> Tensor:
    """The classical RK4 scheme for ``dz/dt = f(t, z)``, ``z(t0) = x``: ``steps`` steps of ``h = (t1 - t0) / steps``."""
    h = (t1 - t0) / steps
    z = x
    for k in range(steps):
        t = t0 + k * h
        k1 = field(time(t), z)
        k2 = field(time(t + h / 2), z + h / 2 * k1)
        k3 = field(time(t + h / 2), z + h / 2 * k2)
        k4 = field(time(t + h), z + h * k3)
        z = z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return z


def integrate(cnf_forward: Callable, field: Callable, x: Tensor, *args: float) -> tuple[Tensor, Tensor]:
    """``cnf_forward(field, x, *args)`` on a copy of ``x``, checked to be a pair ``([B, D], [B])`` of x's dtype."""
    result = cnf_forward(field, x.clone(), *args)
    assert isinstance(result, tuple) and len(result) == 2, (
        f"cnf_forward should return a pair (z, log_det), got {type(result).__name__}")
    z, log_det = result
    expect_tensor("z", z, tuple(x.shape), x.dtype)
    expect_tensor("log_det", log_det, (x.shape[0],), x.dtype)
    return z, log_det


def describe(features: int, t0: float, t1: float, steps: int) -> str:
    return f"{features}-feature field from t0 = {t0:g} to t1 = {t1:g} in {steps} steps"


@check("cnf_forward")
def cnf_forward_state_is_rk4(cnf_forward) -> None:
    """z is the classical RK4 solution with the given t0, t1 and steps (to 1e-9 in float64), forwards and backwards in time"""
    for features, field in fields(5):
        x = torch.randn(4, features, dtype=torch.float64)
        for t0, t1, steps in INTERVALS:
            z, _ = integrate(cnf_forward, field, x, t0, t1, steps)
            expect_close(f"z for a {describe(features, t0, t1, steps)}, against the classical RK4 scheme",
                         z, rk4(field, x, t0, t1, steps).detach(), SAME_SCHEME)


@check("cnf_forward")
def cnf_forward_log_det_matches_numerical_jacobian(cnf_forward) -> None:
    """log_det equals log|det| of the numerical Jacobian of the whole map x -> z (float64, to 1e-5: RK4's error is O(h^4), h <= 1/20)"""
    for features, field in fields(6):
        x = torch.randn(4, features, dtype=torch.float64)
        for t0, t1, steps in INTERVALS:
            _, log_det = integrate(cnf_forward, field, x, t0, t1, steps)
            expected = reference.log_abs_det(jacobian(lambda v: integrate(cnf_forward, field, v, t0, t1, steps)[0], x))
            expect_close(f"log_det for a {describe(features, t0, t1, steps)}, against log|det| of the numerical "
                         "Jacobian of x -> z", log_det, expected, RK4_ERROR)


@check("cnf_forward")
def cnf_forward_solves_a_linear_time_dependent_field(cnf_forward) -> None:
    """for f(t, z) = (1 + 0.8 cos 3t) A z, z and log_det equal the exact exp(C A) x and C tr(A) to 1e-5"""
    generator = torch.Generator().manual_seed(7)
    for features in SIZES:
        field = LinearTimeField(features, generator)
        x = torch.randn(4, features, dtype=torch.float64)
        for t0, t1, steps in INTERVALS:
            z, log_det = integrate(cnf_forward, field, x, t0, t1, steps)
            exact_z, exact_log_det = field.flow(x, t0, t1)
            where = describe(features, t0, t1, steps)
            expect_close(f"z for the linear {where}, against exp(C A) x", z, exact_z, RK4_ERROR)
            expect_close(f"log_det for the linear {where}, against C tr(A)", log_det, exact_log_det, RK4_ERROR)


@check("cnf_forward")
def cnf_forward_shapes_defaults_and_independence(cnf_forward) -> None:
    """z [batch, d] and log_det [batch] of x's dtype, x not changed in place, defaults t0=0, t1=1, steps=20, samples independent"""
    for dtype in DTYPES:
        for features, field in fields(8, dtype):
            x = torch.randn(5, features, dtype=dtype)
            x_before = x.clone()
            cnf_forward(field, x)
            expect_input_untouched(x, x_before, "cnf_forward")
            defaults = integrate(cnf_forward, field, x)
            explicit = cnf_forward(field, x.clone(), t0=0.0, t1=1.0, steps=20)
            for name, value, expected in zip(("z", "log_det"), defaults, explicit):
                expect_close(f"{name} of cnf_forward(f, x) against cnf_forward(f, x, t0=0.0, t1=1.0, steps=20), {dtype}",
                             value, expected.detach(), 1e-12)
            changed = x.clone()
            changed[1] = 3 * changed[1] + 1
            other = integrate(cnf_forward, field, changed)
            keep = torch.arange(5) != 1
            for name, value, before in zip(("z", "log_det"), other, defaults):
                expect_close(f"{name} of the other samples after changing sample 1 only ({dtype}, {features} "
                             "features): samples must be independent", value[keep], before[keep].detach(),
                             TOLERANCE[dtype])

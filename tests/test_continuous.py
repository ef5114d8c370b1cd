"""Continuous flows: the divergence and its estimator, the CNF's log-det, inverse, options and errors."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator

import pytest
import torch
from helpers import (
    check_autograd_log_det,
    check_batch_independence,
    check_gradients_reach_parameters,
    check_leaves_input_unchanged,
    randomize_parameters,
    single_threaded,  # noqa: F401  (the fixture, used through pytestmark)
)
from torch import Tensor, nn

from course_pkg.flows import CNF, Inverse, divergence, exact_probes, hutchinson_probes
from course_pkg.nets import TimeMLP
from course_pkg.testing import autograd_batch_jacobian, check_inverse, check_log_det

pytestmark = pytest.mark.usefixtures("single_threaded")

FEATURES = 3


def random_field(seed: int = 0, features: int = FEATURES) -> TimeMLP:
    """A float64 time-dependent field with every parameter random (the output layer included)."""
    return randomize_parameters(TimeMLP(features, hidden_features=16), seed=seed, scale=0.5).double()


def random_input(batch: int = 4, features: int = FEATURES, seed: int = 1) -> Tensor:
    return torch.randn(batch, features, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def rk4_flow(steps: int = 40, **options: object) -> CNF:
    return CNF(random_field(), method="rk4", steps=steps, **options)


# ---------------------------------------------------------------------------- divergence


def test_exact_divergence_is_the_trace_and_frobenius_norm_of_the_jacobian() -> None:
    field = random_field()
    t = torch.tensor(0.3, dtype=torch.float64)
    z = random_input()
    velocity, trace, frobenius = divergence(lambda v: field(t, v), z, exact_probes(z))
    jacobian = autograd_batch_jacobian(lambda v: field(t, v), z)
    torch.testing.assert_close(velocity, field(t, z))
    torch.testing.assert_close(trace, jacobian.diagonal(dim1=1, dim2=2).sum(dim=1))
    torch.testing.assert_close(frobenius, jacobian.pow(2).sum(dim=(1, 2)))


@pytest.fixture
def vjp_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the backward passes ``divergence`` makes: calls of ``torch.autograd.grad`` and of ``torch.func.vjp``'s pullbacks."""
    calls, inside_pullback = [0], [False]
    real_vjp, real_grad = torch.func.vjp, torch.autograd.grad

    def counting_vjp(function: Callable, *inputs: Tensor) -> tuple:
        output, pullback = real_vjp(function, *inputs)

        def counted(*cotangents: Tensor) -> tuple:
            calls[0] += 1
            inside_pullback[0] = True
            try:
                return pullback(*cotangents)
            finally:
                inside_pullback[0] = False

        return output, counted

    def counting_grad(*args: object, **kwargs: object) -> tuple:
        calls[0] += not inside_pullback[0]  # a pullback runs autograd.grad itself: one pass, counted once
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.func, "vjp", counting_vjp)
    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    yield calls


@pytest.mark.parametrize("estimator, products", [("exact", FEATURES), ("hutchinson", 1)])
def test_exact_trace_takes_d_products_and_hutchinson_one_in_one_backward_pass(
    vjp_calls: list[int], estimator: str, products: int
) -> None:
    """The probes (D basis vectors, batched by vmap, or one noise vector) take one backward pass through the field."""
    field = random_field()
    z = random_input()
    probes = exact_probes(z) if estimator == "exact" else hutchinson_probes(z)
    assert probes.shape == (products, *z.shape)
    divergence(lambda v: field(torch.tensor(0.0, dtype=torch.float64), v), z, probes)
    assert vjp_calls[0] == 1


@pytest.mark.parametrize("estimator", ["exact", "hutchinson"])
def test_divergence_carries_a_graph_only_when_gradients_are_on(estimator: str) -> None:
    """Training through the solver differentiates the trace; ``no_grad`` evaluation leaves no graph behind."""
    field = random_field()
    t = torch.tensor(0.4, dtype=torch.float64)
    z = random_input()
    probes = exact_probes(z) if estimator == "exact" else hutchinson_probes(z, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outputs = divergence(lambda v: field(t, v), z, probes)
    assert not any(output.requires_grad for output in outputs)
    velocity, trace, _ = divergence(lambda v: field(t, v), z, probes)
    (weight_gradient,) = torch.autograd.grad(trace.sum(), field.net[0].weight)
    assert weight_gradient.abs().sum() > 0
    torch.testing.assert_close(outputs[1], trace.detach())


def test_divergence_of_a_field_that_ignores_z_is_zero() -> None:
    z = random_input()
    for probes in (exact_probes(z), hutchinson_probes(z)):
        velocity, trace, frobenius = divergence(lambda v: torch.ones_like(v), z, probes)
        assert torch.equal(trace, torch.zeros(len(z), dtype=z.dtype)) and torch.equal(frobenius, trace)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_estimates_are_unbiased(noise: str) -> None:
    """The mean of many one-probe estimates matches the exact trace and Frobenius norm.

    Tolerance: the mean of ``n`` independent draws has standard error ``s / sqrt(n)``, with ``s`` the
    sample standard deviation; five standard errors is exceeded by chance with probability below
    1e-6 (and the seed is fixed), while a biased estimator (say noise with ``E[eps eps^T] != I``)
    misses by a multiple of the trace itself.
    """
    field = random_field()
    t = torch.tensor(0.7, dtype=torch.float64)
    z = random_input(batch=2)
    draws = 4000
    repeated = z.repeat(draws, 1)  # one independent probe per copy: draws estimates per sample
    generator = torch.Generator().manual_seed(5)
    probes = hutchinson_probes(repeated, noise, generator)
    _, trace, frobenius = divergence(lambda v: field(t, v), repeated, probes)
    _, exact_trace, exact_frobenius = divergence(lambda v: field(t, v), z, exact_probes(z))
    for estimates, exact in [(trace, exact_trace), (frobenius, exact_frobenius)]:
        estimates = estimates.reshape(draws, 2)
        standard_error = estimates.std(dim=0) / math.sqrt(draws)
        assert ((estimates.mean(dim=0) - exact).abs() < 5 * standard_error).all()
        assert (standard_error > 0).all()  # the draws really were random


def test_hutchinson_noise_has_identity_covariance() -> None:
    z = torch.zeros(20000, 2, dtype=torch.float64)
    for noise in ["rademacher", "gaussian"]:
        eps = hutchinson_probes(z, noise, torch.Generator().manual_seed(0))[0]
        torch.testing.assert_close(eps.T @ eps / len(eps), torch.eye(2, dtype=torch.float64), atol=0.05, rtol=0)
    assert set(hutchinson_probes(z, "rademacher").unique().tolist()) == {-1.0, 1.0}


# ---------------------------------------------------------------------------- the CNF as a flow
#
# Tolerances. The reported log-det is RK4's integral of the trace along RK4's path; the numerical
# Jacobian is that of the RK4 map itself. Both approach the exact flow with global error O(h^4),
# so they differ by O(h^4) too: about 5e-7 at h = 1/40 for these fields (and 16 times more at
# h = 1/20, see the order test below). Central differences in float64 add about 1e-9. Hence
# atol = 1e-5 for the log-det (20 times the discretisation error, far below a sign or a factor
# error, which are of the size of the log-det, ~1) and 1e-6 for the round trip, whose error is
# the solver's forward and backward error, ~1e-8 at h = 1/40.


def test_forward_log_det_matches_the_numerical_jacobian_of_the_whole_map() -> None:
    check_log_det(rk4_flow(), random_input(), atol=1e-5, rtol=1e-5)


def test_inverse_log_det_matches_the_numerical_jacobian_of_the_inverse_map() -> None:
    flow = rk4_flow()
    with torch.no_grad():
        z, _ = flow(random_input())
    check_log_det(Inverse(flow), z, atol=1e-5, rtol=1e-5)


def test_log_det_matches_the_autograd_jacobian_through_the_solver() -> None:
    check_autograd_log_det(rk4_flow(), random_input(), atol=1e-5)


def test_log_det_error_falls_as_h_to_the_fourth() -> None:
    """RK4's log-det converges to the exact one at order 4: halving ``h`` divides the error by ~16."""
    x = random_input()
    with torch.no_grad():
        reference = rk4_flow(steps=160)(x)[1]
        errors = [(rk4_flow(steps=steps)(x)[1] - reference).abs().max().item() for steps in (10, 20)]
    assert errors[0] / errors[1] == pytest.approx(16, rel=0.25)


def test_inverse_undoes_forward() -> None:
    check_inverse(rk4_flow(), random_input(), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_flow_contract_batch_gradients_and_input(direction: str) -> None:
    flow, x = rk4_flow(steps=10), random_input()
    check_batch_independence(flow, x, direction)
    check_gradients_reach_parameters(flow, x, direction)
    check_leaves_input_unchanged(flow, x, direction)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_shapes_and_dtypes(dtype: torch.dtype, method: str) -> None:
    flow = CNF(random_field().to(dtype), method=method, steps=10)
    x = random_input().to(dtype)
    z, log_det = flow(x)
    x_again, inverse_log_det = flow.inverse(z)
    assert (z.shape, log_det.shape, x_again.shape, inverse_log_det.shape) == (x.shape, (4,), x.shape, (4,))
    assert {z.dtype, log_det.dtype, x_again.dtype, inverse_log_det.dtype} == {dtype}
    torch.testing.assert_close(x_again, x, atol=1e-3, rtol=1e-3)


def test_a_new_flow_is_the_identity() -> None:
    """TimeMLP's output layer starts at zero: z = x and log_det = 0."""
    x = random_input()
    z, log_det = CNF(TimeMLP(FEATURES).double())(x)
    torch.testing.assert_close(z, x, atol=0, rtol=0)
    torch.testing.assert_close(log_det, torch.zeros(4, dtype=torch.float64), atol=0, rtol=0)


class Scaling(nn.Module):
    """``f(t, z) = a z``: ``z(t) = x e^{at}``, ``tr = D a``, ``|df/dz|_F^2 = D a^2``, all in closed form."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return self.a * z


def test_regularizers_of_a_linear_field_in_closed_form() -> None:
    """Kinetic energy ``int_0^1 a^2 |x|^2 e^{2at} dt = a |x|^2 (e^{2a} - 1) / 2`` and Frobenius ``D a^2``."""
    a, x = 0.6, random_input()
    flow = CNF(Scaling(a), method="rk4", steps=40)
    z, log_det, kinetic, frobenius = flow.forward_regularized(x)
    torch.testing.assert_close(z, x * math.exp(a), atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(log_det, torch.full((4,), FEATURES * a, dtype=torch.float64))
    torch.testing.assert_close(kinetic, a * x.pow(2).sum(dim=1) * (math.exp(2 * a) - 1) / 2, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(frobenius, torch.full((4,), FEATURES * a**2, dtype=torch.float64))
    torch.testing.assert_close(flow(x), (z, log_det))


def test_hutchinson_log_det_is_an_unbiased_estimate_of_the_exact_one() -> None:
    """The path ``z(t)`` does not depend on the noise, so ``E[int eps^T J eps dt] = int tr J dt``.

    Each of the copies of a sample draws its own noise; tolerance: five standard errors (see
    ``test_hutchinson_estimates_are_unbiased``).
    """
    x, draws = random_input(batch=2), 2000
    with torch.no_grad():
        exact = rk4_flow(steps=10)(x)[1]
        torch.manual_seed(3)
        estimates = rk4_flow(steps=10, trace="hutchinson")(x.repeat(draws, 1))[1].reshape(draws, 2)
    standard_error = estimates.std(dim=0) / math.sqrt(draws)
    assert ((estimates.mean(dim=0) - exact).abs() < 5 * standard_error).all()


# ---------------------------------------------------------------------------- solvers, NFE and the adjoint


@pytest.mark.parametrize("method, steps, nfe", [("euler", 7, 7), ("rk4", 5, 20)])
def test_nfe_counts_the_evaluations_of_a_fixed_step_solver(method: str, steps: int, nfe: int) -> None:
    flow = CNF(random_field(), method=method, steps=steps)
    flow(random_input())
    assert flow.nfe == nfe


def test_dopri5_spends_more_evaluations_on_tighter_tolerances() -> None:
    counts = []
    for tolerance in (1e-3, 1e-7):
        flow = CNF(random_field(), method="dopri5", rtol=tolerance, atol=tolerance)
        flow(random_input())
        counts.append(flow.nfe)
    assert 0 < counts[0] < counts[1]


def test_adjoint_gradients_match_backpropagation_through_the_solver() -> None:
    """Same solver and tolerances (dopri5, 1e-8): the two gradients differ by the solvers' errors only.

    The adjoint solves a second ODE backwards in time with its own steps, so the two agree to
    within a few multiples of the tolerance times the size of the gradient (~1): observed ~3e-7.
    """
    x = random_input(batch=8)
    gradients, backward_nfe = [], []
    for adjoint in (False, True):
        field = random_field()
        flow = CNF(field, method="dopri5", rtol=1e-8, atol=1e-8, adjoint=adjoint)
        z, log_det = flow(x)
        forward_nfe = flow.nfe
        loss = (0.5 * z.pow(2).sum(dim=1) - log_det).mean()  # a Gaussian negative log-likelihood
        gradients.append(torch.autograd.grad(loss, list(field.parameters())))
        backward_nfe.append(flow.nfe - forward_nfe)
    torch.testing.assert_close(gradients[1], gradients[0], atol=1e-5, rtol=1e-5)
    assert backward_nfe[0] == 0 and backward_nfe[1] > 0  # only the adjoint evaluates the field backwards


# ---------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("shape", [(3,), (2, 3, 1), (2, 3, 1, 1)])
def test_input_of_the_wrong_shape_is_refused(shape: tuple[int, ...]) -> None:
    flow = rk4_flow(steps=2)
    for method in (flow.forward, flow.inverse):
        with pytest.raises(ValueError, match=re.escape(f"CNF expects input of shape [batch, features], got shape {shape}")):
            method(torch.zeros(shape, dtype=torch.float64))


class Field(nn.Module):
    """A parameter-free vector field ``f(t, z) = function(z)``, for fields that misbehave."""

    def __init__(self, function: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.function = function

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return self.function(z)


def test_a_field_returning_the_wrong_shape_is_named() -> None:
    flow = CNF(Field(lambda z: z[:, :1]), steps=2)
    with pytest.raises(ValueError, match=re.escape("the vector field must return z's shape (4, 3), got (4, 1)")):
        flow(random_input())


@pytest.mark.parametrize("value, name", [(math.nan, "NaN"), (math.inf, "inf")])
def test_non_finite_inputs_are_named(value: float, name: str) -> None:
    x = random_input()
    x[1, 2] = value
    with pytest.raises(ValueError, match=re.escape(f"CNF expects a finite input, got {name} (shape (4, 3))")):
        rk4_flow(steps=2)(x)


def test_a_field_returning_non_finite_values_is_named() -> None:
    flow = CNF(Field(torch.log), steps=2)  # NaN where z < 0
    with pytest.raises(ValueError, match=re.escape("CNF expects a finite vector field, got NaN")):
        flow(random_input())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"trace": "stochastic"}, "CNF: trace is one of ('exact', 'hutchinson'), got 'stochastic'"),
        ({"noise": "uniform"}, "CNF: noise is one of ('rademacher', 'gaussian'), got 'uniform'"),
        ({"method": "rk45"}, "odeint: method is one of ('euler', 'rk4', 'dopri5'), got 'rk45'"),
        ({"method": "euler", "adjoint": True}, "adjoint=True uses torchdiffeq's adaptive solver"),
    ],
)
def test_bad_options_are_refused_when_the_flow_is_built(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        CNF(random_field(), **options)

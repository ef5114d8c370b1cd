"""Planar and radial flows: closed form in the sampling direction (``inverse``), numerical ``forward``."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from helpers import FlowCase, FlowContract, check_rejects_shape, randomize_parameters, standard_normal

from course_pkg import NormalizingFlow, StandardNormal
from course_pkg.flows import Flow, Inverse, Planar, Radial, Sequential


# scale=1.5 makes |w^T u| regularly exceed 1, so the constraint on u_hat is exercised.
CASES = [
    FlowCase("planar", lambda: Planar(3), standard_normal(6, 3), scale=1.5),
    FlowCase("planar-1d", lambda: Planar(1), standard_normal(6, 1), seed=1, scale=1.5),
    FlowCase("radial", lambda: Radial(3), standard_normal(6, 3), seed=2, scale=1.0),
    FlowCase("radial-1d", lambda: Radial(1), standard_normal(6, 1), seed=3, scale=1.0),
]


class TestPlanarRadialContract(FlowContract):
    @pytest.fixture(params=CASES, ids=lambda case: case.name)
    def case(self, request: pytest.FixtureRequest) -> FlowCase:
        return request.param


# ---------------------------------------------------------------------------- invertibility constraints


def test_planar_constraint_holds_however_negative_w_dot_u_is() -> None:
    layer = Planar(4).double()
    with torch.no_grad():
        layer.w.copy_(torch.tensor([1.0, -2.0, 0.5, 0.0]))
        layer.u.copy_(-3.0 * layer.w)  # w^T u = -15.75: the unconstrained map folds space
    assert layer.w @ layer.u < -1
    assert layer.w @ layer.constrained_u() > -1
    x = torch.randn(8, 4, dtype=torch.float64)
    z, _ = layer(x)
    torch.testing.assert_close(layer.inverse(z)[0], x)


def test_planar_u_hat_is_u_when_w_is_zero() -> None:
    layer = Planar(3).double()
    with torch.no_grad():
        layer.w.zero_()
    torch.testing.assert_close(layer.constrained_u(), layer.u)


def test_radial_beta_stays_above_minus_alpha() -> None:
    layer = Radial(2).double()
    with torch.no_grad():
        layer.alpha_raw.fill_(-3.0)
        layer.beta_raw.fill_(-20.0)  # beta just above -alpha: the strongest contraction allowed
    alpha, beta = layer.alpha_beta()
    assert alpha > 0 and beta > -alpha
    z = torch.randn(8, 2, dtype=torch.float64)
    x, log_det = layer.inverse(z)
    assert torch.isfinite(log_det).all()
    torch.testing.assert_close(layer(x)[0], z)


def test_radial_starts_as_identity() -> None:
    z = torch.randn(5, 3)
    x, log_det = Radial(3).inverse(z)
    torch.testing.assert_close(x, z)
    torch.testing.assert_close(log_det, torch.zeros(5))


# ---------------------------------------------------------------------------- both directions


@pytest.mark.parametrize("make_layer", [lambda: Planar(5), lambda: Radial(5)], ids=["planar", "radial"])
def test_numerical_inverse_inverts_the_closed_form_to_float64_precision(make_layer: Callable[[], Flow]) -> None:
    layer = randomize_parameters(make_layer(), seed=4, scale=1.5).double()
    z = 2 * torch.randn(64, 5, dtype=torch.float64)
    x, sampling_log_det = layer.inverse(z)
    z_again, density_log_det = layer(x)
    torch.testing.assert_close(z_again, z, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(density_log_det, -sampling_log_det, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("make_layer", [lambda: Planar(3), lambda: Radial(3)], ids=["planar", "radial"])
def test_numerical_forward_has_the_gradients_of_the_exact_inverse(make_layer: Callable[[], Flow]) -> None:
    """Gradients through the root-finding (implicit function theorem) match finite differences."""
    layer = randomize_parameters(make_layer(), seed=5, scale=1.0).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    names = [name for name, _ in layer.named_parameters()]

    def latent_and_log_det(*parameters: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.func.functional_call(layer, dict(zip(names, parameters)), (x,))

    inputs = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
    assert torch.autograd.gradcheck(latent_and_log_det, inputs)


def test_sampling_and_density_of_own_samples_agree() -> None:
    """The variational-inference use: sample through ``inverse``, score with ``forward``."""
    torch.manual_seed(6)
    transform = Sequential(
        randomize_parameters(Planar(2), seed=6, scale=1.5),
        randomize_parameters(Radial(2), seed=7, scale=1.0),
        randomize_parameters(Planar(2), seed=8, scale=1.5),
    ).double()
    model = NormalizingFlow(transform, StandardNormal(2)).double()
    z = torch.randn(32, 2, dtype=torch.float64)
    x, sampling_log_det = transform.inverse(z)
    expected = model.base.log_prob(z) - sampling_log_det
    torch.testing.assert_close(model.log_prob(x), expected, atol=1e-10, rtol=1e-10)


def test_radial_density_integrates_to_one_in_one_dimension() -> None:
    layer = randomize_parameters(Radial(1), seed=9, scale=1.0).double()
    model = NormalizingFlow(layer, StandardNormal(1)).double()
    grid = torch.linspace(-12, 12, 20001, dtype=torch.float64)[:, None]
    density = model.log_prob(grid).exp()
    total = torch.trapezoid(density, grid[:, 0])
    assert math.isclose(total.item(), 1.0, abs_tol=1e-6)


def test_inverse_wrapper_gives_a_fast_sampler_as_its_forward() -> None:
    layer = randomize_parameters(Planar(3), seed=10).double()
    z = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(Inverse(layer)(z)[0], layer.inverse(z)[0])


# ---------------------------------------------------------------------------- input shapes


@pytest.mark.parametrize(
    ("layer", "shape", "message"),
    [
        (Planar(3), (5, 4), "Planar(3) expects input of shape [batch, 3], got shape (5, 4)"),
        (Planar(3), (5, 3, 2, 2), "Planar(3) expects input of shape [batch, 3], got shape (5, 3, 2, 2)"),
        (Radial(2), (3,), "Radial(2) expects input of shape [batch, 2], got shape (3,)"),
    ],
)
def test_bad_input_shape_raises_helpful_error(layer: torch.nn.Module, shape: tuple[int, ...], message: str) -> None:
    check_rejects_shape(layer, shape, message)

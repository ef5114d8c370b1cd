"""Elementwise flows: affine, ActNorm, leaky ReLU, sigmoid and logit."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from helpers import FlowCase, FlowContract, check_rejects_shape, randomize_parameters, standard_normal

from course_pkg.flows import ActNorm, Affine, LeakyReLUFlow, Logit, Sigmoid
from course_pkg.testing import autograd_batch_jacobian


def initialized_actnorm(num_channels: int) -> ActNorm:
    """An ActNorm marked as initialised, so the randomised parameters are the ones tested."""
    layer = ActNorm(num_channels)
    layer.initialized.fill_(True)
    return layer


def inside_unit_interval(*shape: int) -> Callable[[torch.Generator], torch.Tensor]:
    """Uniform in ``[0.01, 0.99]``: central differences of size 1e-6 stay in the logit's domain."""
    return lambda generator: 0.01 + 0.98 * torch.rand(shape, generator=generator, dtype=torch.float64)


CASES = [
    FlowCase("affine-vectors", lambda: Affine(3), standard_normal(5, 3)),
    FlowCase("affine-images", lambda: Affine(2), standard_normal(4, 2, 3, 3)),
    FlowCase("actnorm-vectors", lambda: initialized_actnorm(3), standard_normal(5, 3), seed=1),
    FlowCase("actnorm-images", lambda: initialized_actnorm(2), standard_normal(4, 2, 3, 3), seed=2),
    FlowCase("leaky-relu", lambda: LeakyReLUFlow(0.3), standard_normal(5, 4)),
    FlowCase("leaky-relu-steep-images", lambda: LeakyReLUFlow(2.5), standard_normal(3, 2, 3, 3)),
    FlowCase("sigmoid", Sigmoid, standard_normal(5, 4)),
    FlowCase("logit-images", lambda: Logit(alpha=0.05), inside_unit_interval(4, 1, 3, 3)),
    FlowCase("logit-no-squeeze", lambda: Logit(alpha=0.0), inside_unit_interval(5, 4)),
]


class TestElementwiseContract(FlowContract):
    @pytest.fixture(params=CASES, ids=lambda case: case.name)
    def case(self, request: pytest.FixtureRequest) -> FlowCase:
        return request.param


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_jacobian_is_diagonal_and_its_log_diagonal_sums_to_the_log_det(case: FlowCase) -> None:
    layer, x = case.build()
    jacobian = autograd_batch_jacobian(lambda v: layer(v)[0], x)
    diagonal = torch.diagonal(jacobian, dim1=1, dim2=2)
    torch.testing.assert_close(jacobian, torch.diag_embed(diagonal), atol=0, rtol=0, msg="off-diagonal entries")
    torch.testing.assert_close(layer(x)[1], diagonal.abs().log().sum(dim=1))


# ---------------------------------------------------------------------------- affine and ActNorm


def test_affine_log_det_counts_every_spatial_position() -> None:
    layer = randomize_parameters(Affine(2), seed=3).double()
    x = torch.randn(4, 2, 3, 5, dtype=torch.float64)
    _, log_det = layer(x)
    torch.testing.assert_close(log_det, 15 * layer.log_scale.sum().expand(4))


def test_affine_starts_as_identity() -> None:
    x = torch.randn(4, 3)
    z, log_det = Affine(3)(x)
    torch.testing.assert_close(z, x)
    torch.testing.assert_close(log_det, torch.zeros(4))


@pytest.mark.parametrize("shape", [(64, 3), (16, 3, 4, 5)], ids=["vectors", "images"])
def test_actnorm_initialisation_normalises_each_channel(shape: tuple[int, ...]) -> None:
    channel_scale = torch.tensor([0.5, 2.0, 7.0], dtype=torch.float64).reshape(1, 3, *[1] * (len(shape) - 2))
    x = 3.0 + channel_scale * torch.randn(shape, dtype=torch.float64)
    layer = ActNorm(3).double()
    z, log_det = layer(x)
    dims = [0, *range(2, len(shape))]
    torch.testing.assert_close(z.mean(dim=dims), torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(z.std(dim=dims, correction=0), torch.ones(3, dtype=torch.float64))
    assert bool(layer.initialized)
    positions = math.prod(shape[2:])
    torch.testing.assert_close(log_det, positions * layer.log_scale.sum().expand(shape[0]))


def test_actnorm_initialises_only_once() -> None:
    layer = ActNorm(2).double()
    layer(torch.randn(32, 2, 3, 3, dtype=torch.float64))
    state = {name: value.clone() for name, value in layer.state_dict().items()}
    other_batch = 5.0 + 3.0 * torch.randn(32, 2, 3, 3, dtype=torch.float64)
    z, _ = layer(other_batch)
    for name, value in layer.state_dict().items():
        torch.testing.assert_close(value, state[name], msg=f"{name} changed on the second call")
    assert z.mean().abs() > 1, "the second batch was normalised: ActNorm initialised again"


def test_actnorm_initialized_flag_survives_state_dict_round_trip() -> None:
    trained = ActNorm(3).double()
    trained(2.0 + torch.randn(16, 3, 2, 2, dtype=torch.float64))
    fresh = ActNorm(3).double()
    assert not bool(fresh.initialized)
    fresh.load_state_dict(trained.state_dict())
    assert bool(fresh.initialized)

    other_batch = -4.0 + 0.1 * torch.randn(16, 3, 2, 2, dtype=torch.float64)
    z_fresh, log_det_fresh = fresh(other_batch)
    z_trained, log_det_trained = trained(other_batch)
    torch.testing.assert_close(z_fresh, z_trained)
    torch.testing.assert_close(log_det_fresh, log_det_trained)
    torch.testing.assert_close(fresh.shift, trained.shift, msg="the loaded ActNorm initialised again")


def test_actnorm_inverse_before_initialisation_leaves_parameters_alone() -> None:
    layer = ActNorm(3)
    z = torch.randn(8, 3)
    x, log_det = layer.inverse(z)
    torch.testing.assert_close(x, z)
    assert not bool(layer.initialized)


def test_actnorm_flag_keeps_its_dtype_under_double() -> None:
    layer = ActNorm(3).double()
    assert layer.initialized.dtype == torch.bool


# ---------------------------------------------------------------------------- leaky ReLU


def test_leaky_relu_log_det_counts_negative_entries() -> None:
    layer = LeakyReLUFlow(negative_slope=0.2)
    x = torch.tensor([[-1.0, 2.0, -3.0], [1.0, 2.0, 3.0]], dtype=torch.float64)
    z, log_det = layer(x)
    torch.testing.assert_close(z, torch.tensor([[-0.2, 2.0, -0.6], [1.0, 2.0, 3.0]], dtype=torch.float64))
    torch.testing.assert_close(log_det, torch.tensor([2 * math.log(0.2), 0.0], dtype=torch.float64))


@pytest.mark.parametrize("slope", [0.0, -0.5])
def test_leaky_relu_rejects_non_positive_slope(slope: float) -> None:
    with pytest.raises(ValueError, match="positive negative_slope"):
        LeakyReLUFlow(negative_slope=slope)


# ---------------------------------------------------------------------------- sigmoid and logit


def test_logit_maps_the_closed_unit_interval_to_finite_values() -> None:
    alpha = 0.05
    z, log_det = Logit(alpha)(torch.tensor([[0.0, 1.0]], dtype=torch.float64))
    edge = math.log((1 - alpha) / alpha)
    torch.testing.assert_close(z, torch.tensor([[-edge, edge]], dtype=torch.float64))
    assert torch.isfinite(log_det).all()


def test_logit_without_squeeze_is_the_inverse_of_sigmoid() -> None:
    y = 0.01 + 0.98 * torch.rand(6, 4, dtype=torch.float64)
    z_logit, log_det_logit = Logit(alpha=0.0)(y)
    z_sigmoid, log_det_sigmoid = Sigmoid().inverse(y)
    torch.testing.assert_close(z_logit, z_sigmoid)
    torch.testing.assert_close(log_det_logit, log_det_sigmoid)


@pytest.mark.parametrize(
    ("layer", "values", "message"),
    [
        (Logit(alpha=0.05), [0.5, 1.2], r"Logit\(alpha=0.05\) expects values in \[0, 1\], got values in \[0.5, 1.2\]"),
        (Logit(alpha=0.05), [-0.1, 0.5], r"expects values in \[0, 1\]"),
        (Logit(alpha=0.05), [0.5, float("nan")], r"expects values in \[0, 1\].*NaN"),
        (Logit(alpha=0.0), [0.0, 0.5], r"Logit\(alpha=0\) expects values in \(0, 1\)"),
    ],
)
def test_logit_rejects_values_outside_its_domain(layer: Logit, values: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        layer(torch.tensor([values], dtype=torch.float64))


def test_sigmoid_inverse_rejects_values_outside_open_unit_interval() -> None:
    with pytest.raises(ValueError, match=r"Sigmoid.inverse expects values in \(0, 1\)"):
        Sigmoid().inverse(torch.tensor([[0.5, 1.0]]))


@pytest.mark.parametrize("alpha", [-0.1, 0.5])
def test_logit_rejects_bad_alpha(alpha: float) -> None:
    with pytest.raises(ValueError, match="0 <= alpha < 0.5"):
        Logit(alpha=alpha)


# ---------------------------------------------------------------------------- input shapes


@pytest.mark.parametrize(
    ("layer", "shape", "message"),
    [
        (Affine(3), (5, 4), "Affine(3) expects input of shape [batch, 3] or [batch, 3, height, width], got shape"),
        (ActNorm(3), (5, 2, 4, 4), "ActNorm(3) expects input of shape [batch, 3] or [batch, 3, height, width]"),
        (ActNorm(3), (5, 3, 4), "got shape (5, 3, 4)"),
        (LeakyReLUFlow(), (5,), "LeakyReLUFlow(negative_slope=0.1) expects input of shape [batch, features]"),
        (Sigmoid(), (5,), "Sigmoid expects input of shape [batch, features] or [batch, channels, height, width]"),
        (Logit(), (2, 2, 2), "Logit(alpha=0.05) expects input of shape"),
    ],
)
def test_bad_input_shape_raises_helpful_error(layer: torch.nn.Module, shape: tuple[int, ...], message: str) -> None:
    check_rejects_shape(layer, shape, message, inverse_message=f"got shape {shape}")

"""Squeeze, factor-out, and the coupling models built from them: NICE, RealNVP, multi-scale RealNVP."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from helpers import FlowCase, FlowContract, actnorm_initialized, check_rejects_shape, randomize_parameters
from helpers import standard_normal, uniform
from helpers import single_threaded  # noqa: F401  (a fixture, used through pytestmark)

from torch import Tensor

from course_pkg.distributions import StandardNormal
from course_pkg.flows import AffineCoupling, FactorOut, Flow, Inverse, Logit, Squeeze, checkerboard_mask
from course_pkg.models import NICE, MultiScaleRealNVP, RealNVP
from course_pkg.nets import ResNet

pytestmark = pytest.mark.usefixtures("single_threaded")



def pixels(*shape: int) -> Callable[[torch.Generator], Tensor]:
    """Dequantized pixels, kept 0.01 away from the edges of [0, 1] so that central differences stay inside."""
    return uniform(0.01, 0.99, *shape)


def tiny_multiscale(shape: tuple[int, int, int], num_scales: int) -> Flow:
    return MultiScaleRealNVP(shape, num_scales=num_scales, hidden_channels=4, num_blocks=1).transform


SQUEEZE_CASES = [
    FlowCase("squeeze", Squeeze, standard_normal(3, 2, 4, 6)),
    FlowCase("unsqueeze", lambda: Inverse(Squeeze()), standard_normal(3, 8, 2, 3)),
]
LATENT_SHAPES = {"squeeze": (3, 8, 2, 3), "unsqueeze": (3, 2, 4, 6)}

CASES = [
    FlowCase(
        "factor-out",
        lambda: FactorOut(AffineCoupling(checkerboard_mask(3, 3), ResNet(2, 4, hidden_channels=4)), kept_channels=2),
        standard_normal(3, 4, 3, 3),
    ),
    FlowCase("nice", lambda: NICE(4, num_layers=3, hidden_features=8).transform, standard_normal(5, 4), seed=1),
    FlowCase(
        "realnvp-actnorm",
        lambda: actnorm_initialized(RealNVP(3, num_layers=3, hidden_features=8, actnorm=True).transform),
        standard_normal(5, 3),
        seed=2,
    ),
    # the multi-scale transform starts with the logit: inputs are dequantized pixels in [0, 1]; parameters at
    # the usual scale 0.5 make 14 random couplings so ill-conditioned that central differences lose all precision
    FlowCase("multiscale-2-scales", lambda: tiny_multiscale((1, 4, 4), 2), pixels(2, 1, 4, 4), seed=3, scale=0.1),
    FlowCase("multiscale-3-scales", lambda: tiny_multiscale((1, 8, 4), 3), pixels(2, 1, 8, 4), seed=4, scale=0.1),
]


class TestModelContract(FlowContract):
    @pytest.fixture(params=CASES, ids=lambda case: case.name)
    def case(self, request: pytest.FixtureRequest) -> FlowCase:
        return request.param


class TestSqueezeContract(FlowContract):
    """The contract's checks, but for the shape: squeezing changes it."""

    @pytest.fixture(params=SQUEEZE_CASES, ids=lambda case: case.name)
    def case(self, request: pytest.FixtureRequest) -> FlowCase:
        return request.param

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_shapes_and_dtypes(self, case: FlowCase, dtype: torch.dtype) -> None:
        layer, x = case.build(dtype)
        z, log_det = layer(x)
        x_again, inverse_log_det = layer.inverse(z)
        assert z.shape == LATENT_SHAPES[case.name] and z.dtype == dtype
        assert log_det.shape == inverse_log_det.shape == (x.shape[0],) and log_det.dtype == dtype
        assert torch.equal(x_again, x)


# ---------------------------------------------------------------------------- squeeze and factor-out


def test_squeeze_moves_each_2x2_block_into_four_channels() -> None:
    x = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    z, log_det = Squeeze()(x)
    assert z.shape == (2, 12, 2, 3)
    for c in range(3):
        for i in range(2):
            for j in range(2):
                torch.testing.assert_close(z[:, 4 * c + 2 * i + j], x[:, c, i::2, j::2], atol=0, rtol=0)
    assert torch.equal(log_det, torch.zeros(2, dtype=torch.float64))


def test_factor_out_passes_the_factored_channels_unchanged_and_adds_the_inner_log_det() -> None:
    inner = AffineCoupling(checkerboard_mask(3, 3), ResNet(2, 4, hidden_channels=4))
    inner = randomize_parameters(inner, seed=5).double()
    x = torch.randn(4, 5, 3, 3, dtype=torch.float64)
    z, log_det = FactorOut(inner, kept_channels=2)(x)
    kept, inner_log_det = inner(x[:, :2])
    torch.testing.assert_close(z[:, :2], kept)
    assert torch.equal(z[:, 2:], x[:, 2:])
    torch.testing.assert_close(log_det, inner_log_det)


@pytest.mark.parametrize(
    ("layer", "shape", "message", "inverse_message"),
    [
        (Squeeze(), (2, 3, 5, 4), "Squeeze needs an even height and width", "Squeeze.inverse needs a channel count"),
        (Squeeze(), (2, 4), "Squeeze expects input of shape [batch, channels, height, width]", "Squeeze.inverse"),
        (
            FactorOut(Squeeze(), kept_channels=2),
            (2, 2, 4, 4),
            "FactorOut(kept_channels=2) needs more than 2 channels, got shape (2, 2, 4, 4)",
            "FactorOut(kept_channels=2).inverse needs more than 2 channels",
        ),
    ],
)
def test_bad_input_shape_raises_helpful_error(
    layer: Flow, shape: tuple[int, ...], message: str, inverse_message: str
) -> None:
    check_rejects_shape(layer, shape, message, inverse_message)


# ---------------------------------------------------------------------------- vector models


@pytest.mark.parametrize("actnorm", [False, True])
def test_new_realnvp_is_the_standard_normal(actnorm: bool) -> None:
    model = RealNVP(3, num_layers=4, hidden_features=8, actnorm=actnorm).double()
    actnorm_initialized(model.transform)
    x = torch.randn(7, 3, dtype=torch.float64)
    torch.testing.assert_close(model.log_prob(x), StandardNormal(3).double().log_prob(x), atol=0, rtol=0)


def test_realnvp_alternates_the_kept_half_and_puts_actnorm_between_couplings() -> None:
    layers = list(RealNVP(5, num_layers=4, hidden_features=8, actnorm=True).transform)
    assert [type(layer).__name__ for layer in layers] == ["SplitAffineCoupling", "ActNorm"] * 4
    masks = [layer.mask.tolist() for layer in layers[::2]]
    assert masks == [[1, 1, 0, 0, 0], [0, 0, 1, 1, 1]] * 2
    sizes = [(layer.conditioner[0].in_features, layer.conditioner[-1].out_features) for layer in layers[::2]]
    assert sizes == [(2, 2 * 3), (3, 2 * 2)] * 2, "a conditioner reads the d_A kept features, returns 2 d_B numbers"


def test_nice_alternates_the_kept_half_and_ends_with_its_scaling() -> None:
    layers = list(NICE(4, num_layers=3, hidden_features=8).transform)
    assert [type(layer).__name__ for layer in layers] == ["SplitAdditiveCoupling"] * 3 + ["Affine"]
    assert [layer.parity for layer in layers[:3]] == [0, 1, 0]
    assert [layer.conditioner[-1].out_features for layer in layers[:3]] == [2] * 3


def test_nice_log_det_is_the_scaling_layers_whatever_the_input() -> None:
    model = randomize_parameters(NICE(4, num_layers=4, hidden_features=8), seed=6).double()
    scaling = model.transform[-1]
    x = 3 * torch.randn(9, 4, dtype=torch.float64)
    _, log_det = model.transform(x)
    torch.testing.assert_close(log_det, scaling.log_scale.sum().expand(9))


# ---------------------------------------------------------------------------- the multi-scale model


def test_multiscale_latent_has_the_shape_of_the_image_and_samples_have_it_too() -> None:
    model = MultiScaleRealNVP((1, 8, 8), num_scales=3, hidden_channels=4)
    x = torch.rand(5, 1, 8, 8)
    z, log_det = model.transform(x)
    assert z.shape == x.shape and log_det.shape == (5,)
    assert model.log_prob(x).shape == (5,)
    assert model.sample(3).shape == (3, 1, 8, 8)


def test_new_multiscale_model_is_just_the_logit_preprocessing() -> None:
    model = MultiScaleRealNVP((1, 4, 4), num_scales=2, hidden_channels=4).double()
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    z, log_det = model.transform(x)
    expected_z, expected_log_det = Logit(0.05)(x)
    torch.testing.assert_close(z, expected_z)
    torch.testing.assert_close(log_det, expected_log_det)


def test_deeper_scales_never_touch_the_factored_out_half() -> None:
    """Changing every parameter of the scales after the first factor-out changes exactly half of ``z``."""
    model = MultiScaleRealNVP((1, 8, 8), num_scales=2, hidden_channels=4)
    model = randomize_parameters(model, seed=7, scale=0.2).double()
    x = 0.01 + 0.98 * torch.rand(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        z, _ = model.transform(x)
        factor_out = next(module for module in model.modules() if isinstance(module, FactorOut))
        randomize_parameters(factor_out.flow, seed=8, scale=0.2)
        z_changed, _ = model.transform(x)
    unchanged = (z == z_changed).reshape(2, -1).sum(dim=1)
    assert unchanged.tolist() == [32, 32], "the factored-out half (32 of 64 numbers) should not depend on later layers"


def test_multiscale_rejects_sizes_that_do_not_halve() -> None:
    MultiScaleRealNVP((1, 28, 28), num_scales=3, hidden_channels=4)  # 28 -> 14 -> 7
    with pytest.raises(ValueError, match=r"divisible by 8, got shape \(1, 28, 28\)"):
        MultiScaleRealNVP((1, 28, 28), num_scales=4)

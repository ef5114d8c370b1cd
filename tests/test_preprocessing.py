"""Dequantization and bits per dimension in the discrete 8-bit space; logit preprocessing's log-det."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_parameters
from helpers import single_threaded  # noqa: F401  (a fixture, used through pytestmark)
from torch import Tensor, nn

from course_pkg.distributions import NormalizingFlow, StandardNormal
from course_pkg.flows import Affine, Logit, Sequential
from course_pkg.models import MultiScaleRealNVP
from course_pkg.preprocessing import DequantizedModel, dequantize, discrete_bits_per_dim
from course_pkg.testing import check_inverse, check_log_det

pytestmark = pytest.mark.usefixtures("single_threaded")


class StandardLogistic(nn.Module):
    """The logistic distribution over ``[*event_shape]``: ``log p(z) = sum_i -z_i - 2 softplus(-z_i)``.

    Its CDF is the sigmoid, so ``logit(U)`` with ``U ~ U(0, 1)`` is logistic: with the transform
    ``Logit(alpha=0)`` it makes the uniform density on ``[0, 1]^D``.
    """

    def __init__(self, *event_shape: int) -> None:
        super().__init__()
        self.event_shape = event_shape
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # follows .double(), as StandardNormal's

    def log_prob(self, z: Tensor) -> Tensor:
        return (-z - 2 * F.softplus(-z)).reshape(z.shape[0], -1).sum(dim=1)

    def sample(self, num_samples: int, temperature: float = 1.0) -> Tensor:
        return torch.logit(torch.rand(num_samples, *self.event_shape, dtype=self._anchor.dtype))


def uniform_model(*event_shape: int) -> NormalizingFlow:
    """The uniform density on ``[0, 1]^D`` as a flow model: ``log p(x) = 0`` for every ``x`` inside."""
    return NormalizingFlow(Logit(alpha=0.0), StandardLogistic(*event_shape)).double()


def random_pixels(*shape: int, seed: int = 0) -> Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


# ---------------------------------------------------------------------------- dequantization


def test_dequantized_values_stay_in_their_pixels_bin() -> None:
    pixels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).repeat(4, 1, 1, 1)
    x = dequantize(pixels, dtype=torch.float64)
    assert x.dtype == torch.float64 and x.shape == pixels.shape
    assert ((x >= 0) & (x < 1)).all()
    assert torch.equal(torch.floor(256 * x), pixels.double()), "x = (k + u) / 256 must stay in [k/256, (k+1)/256)"
    noise = 256 * x - pixels.double()
    assert noise.std() > 0.2, "the noise should fill each bin (uniform noise has std 0.29)"


def test_dequantization_is_random_but_reproducible_from_a_generator() -> None:
    pixels = random_pixels(3, 1, 4, 4)
    first = dequantize(pixels, generator=torch.Generator().manual_seed(1))
    again = dequantize(pixels, generator=torch.Generator().manual_seed(1))
    other = dequantize(pixels, generator=torch.Generator().manual_seed(2))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.dtype == torch.get_default_dtype()


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (torch.tensor([[0.0, 0.5, 1.0]]), "pass the integer images, not images already scaled to"),
        (torch.tensor([[0, 256]]), r"values in \[0, 255\], got values in \[0, 256\]"),
        (torch.tensor([[-1, 3]]), r"values in \[0, 255\]"),
    ],
)
def test_dequantize_refuses_values_that_are_not_pixels(pixels: Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dequantize(pixels)


# ---------------------------------------------------------------------------- bits per dimension


@pytest.mark.parametrize("shape", [(5, 3), (2, 1, 28, 28)], ids=["vectors", "mnist-sized"])
def test_uniform_density_on_the_unit_cube_costs_exactly_8_bits_per_dimension(shape: tuple[int, ...]) -> None:
    model = uniform_model(*shape[1:])
    x = dequantize(random_pixels(*shape), dtype=torch.float64)
    log_prob = model.log_prob(x)
    torch.testing.assert_close(log_prob, torch.zeros(shape[0], dtype=torch.float64), atol=1e-9, rtol=0)
    dimension = math.prod(shape[1:])
    eight_bits = torch.full((shape[0],), 8.0, dtype=torch.float64)
    torch.testing.assert_close(discrete_bits_per_dim(log_prob, dimension), eight_bits)
    dequantized = DequantizedModel(model)
    torch.testing.assert_close(dequantized.bits_per_dim(random_pixels(*shape)), torch.tensor(8.0, dtype=torch.float64))


def test_discrete_bits_per_dim_formula() -> None:
    """``bpd = (-log p + D log n) / (D log 2)``: 2 bits of density per dimension less than raw bytes is 6 bits."""
    dimension = 10
    log_prob = torch.tensor([0.0, 2 * dimension * math.log(2), -dimension * math.log(2)])
    torch.testing.assert_close(discrete_bits_per_dim(log_prob, dimension), torch.tensor([8.0, 6.0, 9.0]))
    torch.testing.assert_close(discrete_bits_per_dim(torch.zeros(1), 4, num_bins=16), torch.tensor([4.0]))
    with pytest.raises(ValueError, match="positive dimension"):
        discrete_bits_per_dim(torch.zeros(1), 0)


def test_dequantized_model_subtracts_d_log_256_from_the_continuous_log_density() -> None:
    flow = MultiScaleRealNVP((1, 4, 4), num_scales=2, hidden_channels=4)
    flow = randomize_parameters(flow, seed=0, scale=0.1).double()
    pixels = random_pixels(3, 1, 4, 4)
    torch.manual_seed(7)
    log_prob = DequantizedModel(flow).log_prob(pixels)
    torch.manual_seed(7)
    x = dequantize(pixels, dtype=torch.float64)  # the same noise
    torch.testing.assert_close(log_prob, flow.log_prob(x) - 16 * math.log(256))
    torch.testing.assert_close(
        -log_prob / (16 * math.log(2)), discrete_bits_per_dim(flow.log_prob(x), 16), msg="nats to discrete bits"
    )


def test_dequantization_bound_never_beats_the_exact_bin_probabilities() -> None:
    """With ``P(k)`` the mass of ``p`` over the bin ``[k/n, (k+1)/n)``: ``E_u log p((k+u)/n) - log n <= log P(k)``.

    In one dimension with ``n = 8`` bins, by quadrature. The discrete probabilities sum to at most 1
    (the logit's squeeze leaves a little mass outside ``[0, 1]``).
    """
    num_bins, points = 8, 4001
    flow = NormalizingFlow(Sequential(Logit(alpha=0.05), Affine(1)), StandardNormal(1))
    flow = randomize_parameters(flow, seed=3).double()
    u = torch.linspace(0, 1, points, dtype=torch.float64)
    bins = torch.arange(num_bins, dtype=torch.float64)
    x = ((bins[:, None] + u[None, :]) / num_bins).reshape(-1, 1)
    with torch.no_grad():
        log_density = flow.log_prob(x).reshape(num_bins, points)
    exact_log_mass = torch.log(torch.trapezoid(log_density.exp(), u, dim=1) / num_bins)
    bound = torch.trapezoid(log_density, u, dim=1) - math.log(num_bins)
    assert (bound <= exact_log_mass).all(), f"Jensen's bound {bound.tolist()} above log P(k) {exact_log_mass.tolist()}"
    assert 0.9 < exact_log_mass.exp().sum() <= 1 + 1e-9


def test_dequantized_model_samples_pixels() -> None:
    model = DequantizedModel(MultiScaleRealNVP((1, 4, 4), num_scales=2, hidden_channels=4))
    pixels = model.sample(5)
    assert pixels.shape == (5, 1, 4, 4) and pixels.dtype == torch.uint8
    assert pixels.float().std() > 0, "samples should vary"


# ---------------------------------------------------------------------------- logit preprocessing


def test_logit_preprocessing_of_dequantized_pixels_has_the_exact_log_det() -> None:
    x = dequantize(random_pixels(2, 1, 4, 4), dtype=torch.float64)
    layer = Logit(alpha=0.05)
    check_log_det(layer, x)
    check_inverse(layer, x)
    z, log_det = layer(x)
    y = 0.05 + 0.9 * x
    expected = (math.log(0.9) - torch.log(y) - torch.log1p(-y)).reshape(2, -1).sum(dim=1)
    torch.testing.assert_close(log_det, expected)

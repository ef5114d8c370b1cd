"""Glow's layers and model (chapter 6): the step of flow, the split with a learned prior, the multi-scale model."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import FlowCase, FlowContract, actnorm_initialized, randomize_parameters, standard_normal, uniform
from helpers import single_threaded  # noqa: F401  (a fixture, used through pytestmark)

from course_pkg.distributions import StandardNormal
from course_pkg.flows import ActNorm
from course_pkg.flows.glow import GlowStep, glow_levels, split_prior
from course_pkg.models import Glow

pytestmark = pytest.mark.usefixtures("single_threaded")



CASES = [
    FlowCase("step-4-channels", lambda: actnorm_initialized(GlowStep(4, hidden_channels=6)), standard_normal(3, 4, 3, 3)),
    FlowCase("step-3-channels", lambda: actnorm_initialized(GlowStep(3, hidden_channels=5)), standard_normal(2, 3, 2, 4), seed=1),
    FlowCase("split-prior", lambda: split_prior(4), standard_normal(3, 4, 3, 3), seed=2),
    # two levels of two steps: 10 random layers, at the scale that keeps central differences precise
    FlowCase(
        "levels", lambda: actnorm_initialized(glow_levels(1, 2, 2, hidden_channels=4)), standard_normal(2, 1, 4, 4),
        seed=3, scale=0.2,
    ),
    FlowCase(
        "glow-model", lambda: actnorm_initialized(Glow((2, 4, 4), 2, 1, hidden_channels=4).transform),
        uniform(0.01, 0.99, 2, 2, 4, 4), seed=4, scale=0.2,
    ),
]


class TestGlowContract(FlowContract):
    @pytest.fixture(params=CASES, ids=lambda case: case.name)
    def case(self, request: pytest.FixtureRequest) -> FlowCase:
        return request.param


def test_new_step_is_actnorm_then_a_rotation_or_reflection() -> None:
    """A new step standardises its first batch, mixes channels orthogonally, and its coupling is the identity."""
    step = GlowStep(4, hidden_channels=8).double()
    x = 3 + 2 * torch.randn(16, 4, 5, 5, dtype=torch.float64)
    z, log_det = step(x)
    actnorm, conv, coupling = step
    h, actnorm_log_det = actnorm(x)
    weight = conv.weight.matrix()
    # orthogonal to float32's precision: the LU factors are drawn in float32, then cast
    torch.testing.assert_close(weight @ weight.T, torch.eye(4, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(z, torch.einsum("ij,bjhw->bihw", weight, h))
    torch.testing.assert_close(log_det, actnorm_log_det, atol=1e-5, rtol=0)  # |det W| = 1, the coupling adds 0
    assert torch.equal(coupling(h)[0], h)


def test_split_prior_is_the_conditional_gaussian() -> None:
    """log N(eps; 0, I) + log_det of the prior coupling equals log N(z_out; mu(z_kept), sigma(z_kept)^2)."""
    prior = randomize_parameters(split_prior(4), seed=7).double()
    z = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    eps, log_det = prior(z)
    kept, out = z[:, :2], z[:, 2:]
    assert torch.equal(eps[:, :2], kept)
    raw_s, t = prior.conditioner(kept).chunk(2, dim=1)
    s = prior.transformer.scale_bound * torch.tanh(raw_s / prior.transformer.scale_bound)
    mean, std = -t * torch.exp(-s), torch.exp(-s)  # eps = out exp(s) + t = (out - mean) / std
    gaussian = torch.distributions.Normal(mean, std).log_prob(out).sum(dim=(1, 2, 3))
    standard = torch.distributions.Normal(0.0, 1.0).log_prob(eps[:, 2:]).sum(dim=(1, 2, 3))
    torch.testing.assert_close(standard + log_det, gaussian)


def test_new_glow_is_the_logit_of_a_standard_normal() -> None:
    """Before training (ActNorm marked set), log p(x) is the standard normal's at z, plus the logit's log-det."""
    model = Glow((1, 8, 8), num_levels=2, steps_per_level=2, hidden_channels=4).double()
    actnorm_initialized(model.transform)
    for module in model.modules():  # orthogonal 1x1 convolutions keep the volume
        if isinstance(module, ActNorm):
            assert torch.equal(module.log_scale, torch.zeros_like(module.log_scale))
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64) * 0.9 + 0.05
    logit, logit_log_det = model.transform[0](x)
    z = model.encode(x)
    # the 1x1 convolutions are orthogonal to float32's precision (drawn in float32, then cast)
    torch.testing.assert_close(z.pow(2).sum(dim=(1, 2, 3)), logit.pow(2).sum(dim=(1, 2, 3)), rtol=1e-6, atol=0)
    expected = StandardNormal((1, 8, 8)).double().log_prob(logit) + logit_log_det
    torch.testing.assert_close(model.log_prob(x), expected, rtol=0, atol=1e-5)


def test_encode_decode_round_trip_and_temperature() -> None:
    model = randomize_parameters(Glow((1, 8, 8), 2, 2, hidden_channels=4), seed=9, scale=0.1).double()
    actnorm_initialized(model.transform)
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64) * 0.9 + 0.05
    torch.testing.assert_close(model.decode(model.encode(x)), x)
    torch.manual_seed(0)
    cold = model.base.sample(2000, temperature=0.5)
    assert abs(cold.std().item() - 0.5) < 0.01
    assert model.sample(3, temperature=0.7).shape == (3, 1, 8, 8)


def test_log_det_of_a_level_counts_every_layer() -> None:
    """A level's log-det is the sum of its steps', its prior's and the deeper level's (the squeezes add 0)."""
    levels = randomize_parameters(actnorm_initialized(glow_levels(1, 2, 1, hidden_channels=4)), seed=11, scale=0.3).double()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    _, log_det = levels(x)
    squeeze, step, prior, factor_out, unsqueeze = levels
    h, total = squeeze(x)
    for layer in (step, prior, factor_out, unsqueeze):
        h, layer_log_det = layer(h)
        total = total + layer_log_det
    torch.testing.assert_close(log_det, total)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(shape=(1, 28, 28), num_levels=3), "needs a height and width divisible by 8, got shape (1, 28, 28)"),
        (dict(shape=(1, 8, 8), steps_per_level=0), "Glow needs num_levels >= 1 and steps_per_level >= 1"),
    ],
)
def test_bad_architecture_raises_helpful_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Glow(**kwargs)


def test_glow_trains_in_bfloat16_autocast_with_float32_log_det() -> None:
    """Under bf16 autocast the model trains (finite loss and gradients) and its log-likelihood stays float32."""
    model = Glow((1, 8, 8), 2, 1, hidden_channels=8)
    x = torch.rand(8, 1, 8, 8) * 0.9 + 0.05
    model.log_prob(x)  # ActNorm's initialisation, in float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_prob = model.log_prob(x)
    assert log_prob.dtype == torch.float32
    reference = model.log_prob(x)
    assert (log_prob - reference).abs().max() < 0.05 * reference.abs().max() + 1
    (-log_prob.mean()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert math.isfinite(log_prob.mean().item())

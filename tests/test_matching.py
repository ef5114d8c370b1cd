"""Flow matching (course_pkg.matching): transport plans, couplings, interpolants and the regression loss."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from course_pkg.flows.continuous import CNF
from course_pkg.matching import couple, flow_matching_loss, interpolate, sample_pairs, transport_plan, wasserstein2
from course_pkg.nets import TimeMLP


def brute_force_assignment_cost(x: torch.Tensor, y: torch.Tensor) -> float:
    cost = torch.cdist(x, y).pow(2)
    return min(sum(cost[i, j].item() for i, j in enumerate(p)) for p in itertools.permutations(range(len(x)))) / len(x)


def test_the_exact_plan_is_the_cheapest_permutation() -> None:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 2, generator=generator, dtype=torch.float64), torch.randn(6, 2, generator=generator, dtype=torch.float64)
    plan = transport_plan(x, y)
    assert torch.allclose(plan.sum(dim=0), torch.full((6,), 1 / 6, dtype=torch.float64))
    assert torch.allclose(plan.sum(dim=1), torch.full((6,), 1 / 6, dtype=torch.float64))
    assert (plan > 0).sum() == 6, "for N = M points with uniform weights the exact plan is a permutation"
    assert torch.allclose(plan[plan > 0], torch.tensor(1 / 6, dtype=torch.float64))
    cost = (plan * torch.cdist(x, y).pow(2)).sum().item()
    assert cost == pytest.approx(brute_force_assignment_cost(x, y), rel=1e-12)
    assert wasserstein2(x, y) ** 2 == pytest.approx(cost, rel=1e-9)


def test_entropic_plans_keep_the_marginals_and_spread_as_the_regularization_grows() -> None:
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(20, 2, generator=generator, dtype=torch.float64), torch.randn(30, 2, generator=generator, dtype=torch.float64)
    exact = transport_plan(x, y)
    entropies = []
    for regularization in (0.01, 0.1, 10.0):
        plan = transport_plan(x, y, regularization)
        torch.testing.assert_close(plan.sum(dim=1), torch.full((20,), 1 / 20, dtype=torch.float64), atol=1e-7, rtol=0)
        torch.testing.assert_close(plan.sum(dim=0), torch.full((30,), 1 / 30, dtype=torch.float64), atol=1e-7, rtol=0)
        entropies.append(-(plan * plan.clamp_min(1e-300).log()).sum().item())
    assert entropies[0] < entropies[1] < entropies[2] <= math.log(600) + 1e-9
    assert entropies[2] == pytest.approx(math.log(600), abs=0.01), "a large regularization gives the independent coupling"
    cost = torch.cdist(x, y).pow(2)
    assert (transport_plan(x, y, 0.01) * cost).sum() == pytest.approx((exact * cost).sum().item(), rel=0.05)
    with pytest.raises(ValueError, match="regularization is >= 0"):
        transport_plan(x, y, -1.0)


def test_the_distance_of_a_translated_cloud_is_the_translation() -> None:
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    shift = torch.tensor([0.3, -0.4, 1.2], dtype=torch.float64)
    assert wasserstein2(x, x) == pytest.approx(0.0, abs=1e-12)
    assert wasserstein2(x, x + shift) == pytest.approx(shift.norm().item(), rel=1e-9)


def test_pairs_are_drawn_with_the_plan_probabilities() -> None:
    plan = torch.tensor([[0.5, 0.1], [0.0, 0.4]])
    i, j = sample_pairs(plan, 100_000, torch.Generator().manual_seed(3))
    frequencies = torch.zeros(2, 2).index_put_((i, j), torch.ones(len(i)), accumulate=True) / len(i)
    torch.testing.assert_close(frequencies, plan, atol=0.005, rtol=0)


def test_the_ot_coupling_pairs_a_permutation_of_each_batch_more_cheaply() -> None:
    generator = torch.Generator().manual_seed(4)
    x, noise = torch.randn(64, 2, generator=generator) + 3, torch.randn(64, 2, generator=generator)
    paired_x, paired_noise = couple(x, noise, "ot")
    assert torch.equal(paired_x.sort(dim=0).values, x.sort(dim=0).values)
    assert torch.equal(paired_noise.sort(dim=0).values, noise.sort(dim=0).values)
    assert (paired_x - paired_noise).pow(2).sum() < (x - noise).pow(2).sum()
    assert couple(x, noise, "independent") == (x, noise)
    with pytest.raises(ValueError, match="coupling is one of"):
        couple(x, noise, "sinkhorn")


def test_the_bridge_is_pinned_at_both_ends_with_variance_sigma_squared_t_one_minus_t() -> None:
    generator = torch.Generator().manual_seed(5)
    x, noise = torch.randn(4, 2, generator=generator), torch.randn(4, 2, generator=generator)
    torch.testing.assert_close(interpolate(x, noise, torch.zeros(4), sigma=1.0, generator=generator), x)
    torch.testing.assert_close(interpolate(x, noise, torch.ones(4), sigma=1.0, generator=generator), noise)
    many = torch.zeros(100_000, 1)
    spread = interpolate(many, many + 2, torch.full((100_000,), 0.25), sigma=0.5, generator=generator)
    assert spread.mean().item() == pytest.approx(0.5, abs=0.01)
    assert spread.var().item() == pytest.approx(0.25 * 0.25 * 0.75, rel=0.02)


def test_the_marginal_field_of_a_point_mass_has_zero_loss() -> None:
    """Data at ``a``: ``z_t = (1 - t) a + t eps``, so ``eps - a = (z_t - a) / t`` exactly."""
    a = torch.tensor([1.0, -2.0], dtype=torch.float64)
    x = a.expand(512, 2)
    exact = lambda t, z: (z - a) / t[:, None]
    assert flow_matching_loss(exact, x, generator=torch.Generator().manual_seed(6)).item() < 1e-20
    assert flow_matching_loss(lambda t, z: torch.zeros_like(z), x, generator=torch.Generator().manual_seed(6)) > 1.0


def test_the_marginal_field_of_a_gaussian_is_a_cnf_that_rescales_by_its_scale() -> None:
    """Data ``N(0, s^2 I)``: ``z_t ~ N(0, sigma_t^2 I)`` with ``sigma_t^2 = (1 - t)^2 s^2 + t^2``, field ``z sigma_t' / sigma_t``."""
    s = 0.5

    class GaussianMarginal(torch.nn.Module):
        def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            t = t.reshape(-1, 1)
            variance = (1 - t) ** 2 * s**2 + t**2
            return z * ((t - 1) * s**2 + t) / variance

    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    z, log_det = CNF(GaussianMarginal(), method="rk4", steps=100)(x)  # RK4: error O(h^4), about 1e-9 at h = 0.01
    torch.testing.assert_close(z, x / s, atol=1e-8, rtol=0)
    torch.testing.assert_close(log_det, torch.full((8,), -3 * math.log(s), dtype=torch.float64), atol=1e-8, rtol=0)
    assert flow_matching_loss(GaussianMarginal(), s * x.repeat(64, 1)) < flow_matching_loss(lambda t, z: 0 * z, s * x.repeat(64, 1))


def test_a_time_mlp_takes_one_time_for_the_batch_or_one_per_sample() -> None:
    field = TimeMLP(2)
    torch.nn.init.normal_(field.net[-1].weight)
    z = torch.randn(5, 2)
    torch.testing.assert_close(field(torch.tensor(0.3), z), field(torch.full((5,), 0.3), z))
    assert not torch.allclose(field(torch.linspace(0, 1, 5), z), field(torch.tensor(0.3), z))
    with pytest.raises(RuntimeError):
        field(torch.zeros(3), z)

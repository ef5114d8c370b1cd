"""The flow protocol, composition, inversion, the base distribution and the flow model."""

from __future__ import annotations

import math

import pytest
import torch

from course_pkg import Flow, Inverse, NormalizingFlow, Sequential, StandardNormal
from course_pkg.testing import autograd_batch_jacobian, check_inverse, check_log_det, check_samples_independent, log_abs_det


class MatrixFlow(Flow):
    """``z = A x + b`` for a fixed dense matrix: the smallest flow with a non-trivial Jacobian."""

    def __init__(self, matrix: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.matrix = torch.nn.Parameter(matrix)
        self.shift = torch.nn.Parameter(shift)

    def forward(self, x):
        log_det = torch.linalg.slogdet(self.matrix).logabsdet.expand(x.shape[0])
        return x @ self.matrix.T + self.shift, log_det

    def inverse(self, z):
        log_det = -torch.linalg.slogdet(self.matrix).logabsdet.expand(z.shape[0])
        return torch.linalg.solve(self.matrix, (z - self.shift).T).T, log_det


class SinhFlow(Flow):
    """``z = sinh(x)`` elementwise: nonlinear and increasing, ``log|dz/dx| = log cosh(x)``."""

    def forward(self, x):
        return torch.sinh(x), torch.log(torch.cosh(x)).sum(dim=1)

    def inverse(self, z):
        x = torch.asinh(z)
        return x, -torch.log(torch.cosh(x)).sum(dim=1)


def random_matrix_flow(d: int, seed: int) -> MatrixFlow:
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(d, d, generator=generator, dtype=torch.float64) + 2 * torch.eye(d, dtype=torch.float64)
    return MatrixFlow(matrix, torch.randn(d, generator=generator, dtype=torch.float64))


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(8, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_test_flows_satisfy_the_contract(x):
    for flow in (random_matrix_flow(3, 0), SinhFlow()):
        check_log_det(flow, x)
        check_inverse(flow, x)


def test_sequential_log_dets_add_and_match_the_numerical_jacobian(x):
    first, second = random_matrix_flow(3, 0), random_matrix_flow(3, 1)
    flow = Sequential(first, SinhFlow(), second)
    z, log_det = flow(x)
    h1, ld1 = first(x)
    h2, ld2 = SinhFlow()(h1)
    expected_z, ld3 = second(h2)
    torch.testing.assert_close(z, expected_z)
    torch.testing.assert_close(log_det, ld1 + ld2 + ld3)
    check_log_det(flow, x)
    check_inverse(flow, x)


def test_sequential_accepts_a_list_and_indexes_its_layers():
    layers = [random_matrix_flow(2, 0), SinhFlow()]
    flow = Sequential(layers)
    assert len(flow) == 2 and flow[1] is layers[1]


def test_sequential_refuses_what_is_not_a_flow():
    with pytest.raises(TypeError, match="Sequential takes Flow layers, got Linear"):
        Sequential(torch.nn.Linear(2, 2))


def test_inverse_swaps_the_directions(x):
    flow = Sequential(random_matrix_flow(3, 0), SinhFlow())
    inverted = Inverse(flow)
    z, _ = flow(x)
    x_again, log_det = inverted(z)
    torch.testing.assert_close(x_again, x)
    torch.testing.assert_close(log_det, -flow(x)[1])
    check_log_det(inverted, z)
    check_inverse(inverted, z)


def test_autograd_jacobian_agrees_with_the_log_det(x):
    flow = Sequential(random_matrix_flow(3, 2), SinhFlow())
    jacobians = autograd_batch_jacobian(lambda v: flow(v)[0], x)
    torch.testing.assert_close(log_abs_det(jacobians), flow(x)[1])


def test_composition_keeps_samples_independent(x):
    flow = Sequential(random_matrix_flow(3, 0), SinhFlow(), random_matrix_flow(3, 1))
    changed = x.clone()
    changed[3] += 10.0
    check_samples_independent(flow, x, changed)


def test_flows_do_not_change_their_input(x):
    before = x.clone()
    flow = Sequential(random_matrix_flow(3, 0), SinhFlow())
    z, _ = flow(x)
    flow.inverse(z)
    assert torch.equal(x, before)


def test_standard_normal_matches_torch_distributions():
    base = StandardNormal(4)
    z = torch.randn(10, 4)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(dim=1)
    torch.testing.assert_close(base.log_prob(z), expected)
    images = StandardNormal((1, 2, 2))
    torch.testing.assert_close(images.log_prob(z.reshape(10, 1, 2, 2)), expected)


def test_standard_normal_rejects_the_wrong_event_shape():
    with pytest.raises(ValueError, match=r"expected \[batch, 4\]"):
        StandardNormal(4).log_prob(torch.zeros(3, 5))


def test_standard_normal_samples_follow_the_model_device_and_dtype():
    base = StandardNormal(3).to(torch.float64)
    samples = base.sample(5000, temperature=0.5)
    assert samples.shape == (5000, 3) and samples.dtype == torch.float64
    assert abs(samples.std().item() - 0.5) < 0.02


def test_flow_density_integrates_to_one():
    # A 2-D model with a dense linear map and a nonlinearity; integrate exp(log p) on a grid.
    model = NormalizingFlow(Sequential(random_matrix_flow(2, 3), SinhFlow()), StandardNormal(2).double())
    axis = torch.linspace(-4, 4, 801, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        mass = model.log_prob(grid).exp().sum() * (axis[1] - axis[0]) ** 2
    assert abs(mass.item() - 1.0) < 1e-3


def test_samples_are_distributed_as_the_density_says():
    flow = random_matrix_flow(2, 4)
    model = NormalizingFlow(flow, StandardNormal(2).double())
    torch.manual_seed(0)
    samples = model.sample(200_000)
    # x = A^{-1}(z - b): mean -A^{-1} b, covariance (A^T A)^{-1}.
    matrix, shift = flow.matrix.detach(), flow.shift.detach()
    torch.testing.assert_close(samples.mean(0), -torch.linalg.solve(matrix, shift), atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T), torch.linalg.inv(matrix.T @ matrix), atol=0.01, rtol=0.02)


def test_nll_and_bits_per_dim():
    model = NormalizingFlow(random_matrix_flow(3, 0), StandardNormal(3).double())
    x = torch.randn(16, 3, dtype=torch.float64)
    nll = -model.log_prob(x).mean()
    torch.testing.assert_close(model.nll(x), nll)
    torch.testing.assert_close(model.bits_per_dim(x), nll / (3 * math.log(2)))

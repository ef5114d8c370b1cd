"""Linear flows: permutations, the LU-decomposed linear layer, Glow's invertible 1x1 convolution."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from helpers import FlowCase, FlowContract, check_rejects_shape, randomize_parameters, standard_normal

from course_pkg.flows import DenseWeight, Flow, InvertibleConv1x1, LULinear, LUWeight, Permutation


def seeded(make_layer: Callable[[], Flow]) -> Callable[[], Flow]:
    """Build with a fixed global seed: the random rotation and permutation of the init are reproducible."""

    def build() -> Flow:
        torch.manual_seed(0)
        return make_layer()

    return build


# Permutations have no parameters: the permutation itself is the random part.
CASES = [
    FlowCase("permutation-random", lambda: Permutation.random(5, seed=3), standard_normal(4, 5)),
    FlowCase("permutation-reverse-images", lambda: Permutation.reverse(3), standard_normal(2, 3, 2, 2)),
    FlowCase("lu-linear", seeded(lambda: LULinear(4)), standard_normal(5, 4)),
    FlowCase("conv1x1", seeded(lambda: InvertibleConv1x1(3)), standard_normal(2, 3, 2, 3)),
    FlowCase("conv1x1-lu", seeded(lambda: InvertibleConv1x1(3, lu=True)), standard_normal(2, 3, 2, 3), seed=4),
]


class TestLinearContract(FlowContract):
    @pytest.fixture(params=CASES, ids=lambda case: case.name)
    def case(self, request: pytest.FixtureRequest) -> FlowCase:
        return request.param


# ---------------------------------------------------------------------------- permutations


def test_permutation_reorders_dimension_one() -> None:
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float64).reshape(2, 3, 2, 2)
    z, log_det = Permutation([2, 0, 1])(x)
    torch.testing.assert_close(z, x[:, [2, 0, 1]])
    torch.testing.assert_close(log_det, torch.zeros(2, dtype=torch.float64))


def test_reverse_permutation_flips_the_features() -> None:
    x = torch.randn(4, 5)
    torch.testing.assert_close(Permutation.reverse(5)(x)[0], x.flip(1))


def test_random_permutation_is_reproducible_from_a_seed() -> None:
    first, second = Permutation.random(10, seed=7), Permutation.random(10, seed=7)
    assert torch.equal(first.permutation, second.permutation)
    assert not torch.equal(first.permutation, Permutation.random(10, seed=8).permutation)


@pytest.mark.parametrize("permutation", [[0, 0, 1], [0, 1, 3], [[0, 1], [1, 0]]])
def test_permutation_rejects_what_is_not_a_permutation(permutation: list) -> None:
    with pytest.raises(ValueError, match="each of 0, ..., n-1 exactly once"):
        Permutation(permutation)


def test_permutation_moves_with_the_module_but_keeps_integer_indices() -> None:
    layer = Permutation.reverse(3).double()
    assert layer.permutation.dtype == torch.long
    x = torch.randn(2, 3, dtype=torch.float64)
    assert layer(x)[0].dtype == torch.float64


# ---------------------------------------------------------------------------- LU-decomposed linear


def randomized_lu_linear(features: int, seed: int) -> LULinear:
    torch.manual_seed(seed)
    return randomize_parameters(LULinear(features), seed=seed).double()


def test_lu_linear_log_det_equals_slogdet_of_the_assembled_weight() -> None:
    layer = randomized_lu_linear(6, seed=5)
    weight = layer.weight.matrix()
    _, log_det = layer(torch.randn(3, 6, dtype=torch.float64))
    expected = torch.linalg.slogdet(weight).logabsdet
    torch.testing.assert_close(log_det, expected.expand(3), atol=1e-12, rtol=1e-12)


def test_lu_linear_is_w_x_plus_b_and_its_inverse_is_accurate() -> None:
    layer = randomized_lu_linear(8, seed=6)
    x = torch.randn(16, 8, dtype=torch.float64)
    z, _ = layer(x)
    torch.testing.assert_close(z, x @ layer.weight.matrix().T + layer.bias)
    x_again, _ = layer.inverse(z)
    assert (x_again - x).abs().max() < 1e-6
    torch.testing.assert_close(x_again, torch.linalg.solve(layer.weight.matrix(), (z - layer.bias).T).T)


def test_lu_factors_have_the_promised_structure() -> None:
    weight = randomize_parameters(LUWeight(5), seed=7).double()
    lower, upper = weight.lower_triangular(), weight.upper_triangular()
    assert torch.equal(lower, torch.tril(lower))
    assert torch.equal(torch.diagonal(lower), torch.ones(5, dtype=torch.float64))
    assert torch.equal(upper, torch.triu(upper))
    torch.testing.assert_close(torch.diagonal(upper), weight.sign * torch.exp(weight.log_scale))
    permutation = weight.permutation_matrix
    torch.testing.assert_close(permutation @ permutation.T, torch.eye(5, dtype=torch.float64))
    assert set(permutation.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(weight.matrix(), permutation @ lower @ upper)


def test_entries_outside_the_triangles_do_not_matter() -> None:
    weight = randomize_parameters(LUWeight(4), seed=8).double()
    before = weight.matrix().clone()
    with torch.no_grad():
        weight.lower.add_(torch.triu(torch.ones(4, 4, dtype=torch.float64)))
        weight.upper.add_(torch.tril(torch.ones(4, 4, dtype=torch.float64)))
    torch.testing.assert_close(weight.matrix(), before)


def test_lu_linear_starts_near_a_rotation() -> None:
    torch.manual_seed(9)
    layer = LULinear(6).double()
    weight = layer.weight.matrix()
    torch.testing.assert_close(weight @ weight.T, torch.eye(6, dtype=torch.float64), atol=1e-6, rtol=0)
    _, log_det = layer(torch.randn(2, 6, dtype=torch.float64))
    torch.testing.assert_close(log_det, torch.zeros(2, dtype=torch.float64), atol=1e-6, rtol=0)


def test_lu_linear_never_calls_slogdet(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("LULinear computed a dense determinant")

    layer = randomized_lu_linear(4, seed=10)
    monkeypatch.setattr(torch.linalg, "slogdet", refuse)
    monkeypatch.setattr(torch.linalg, "det", refuse)
    layer(torch.randn(2, 4, dtype=torch.float64))
    layer.inverse(torch.randn(2, 4, dtype=torch.float64))


# ---------------------------------------------------------------------------- invertible 1x1 convolution


@pytest.mark.parametrize("lu", [False, True], ids=["plain", "lu"])
def test_conv1x1_is_a_convolution_with_log_det_h_w_log_abs_det(lu: bool) -> None:
    torch.manual_seed(11)
    layer = randomize_parameters(InvertibleConv1x1(3, lu=lu), seed=11).double()
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    z, log_det = layer(x)
    weight = layer.weight.matrix()
    torch.testing.assert_close(z, F.conv2d(x, weight[:, :, None, None]))
    torch.testing.assert_close(log_det, 20 * torch.linalg.slogdet(weight).logabsdet.expand(2))


def test_conv1x1_and_lu_linear_share_one_lu_parameterisation() -> None:
    assert isinstance(InvertibleConv1x1(3, lu=True).weight, LUWeight)
    assert isinstance(InvertibleConv1x1(3, lu=False).weight, DenseWeight)
    assert isinstance(LULinear(3).weight, LUWeight)


def test_lu_conv1x1_log_det_is_h_w_sum_of_log_scales() -> None:
    layer = randomize_parameters(InvertibleConv1x1(4, lu=True), seed=12).double()
    _, log_det = layer(torch.randn(3, 4, 2, 3, dtype=torch.float64))
    torch.testing.assert_close(log_det, 6 * layer.weight.log_scale.sum().expand(3))


# ---------------------------------------------------------------------------- input shapes


@pytest.mark.parametrize(
    ("layer", "shape", "message"),
    [
        (Permutation.reverse(3), (5, 4), "Permutation of 3 features expects input of shape [batch, 3] or [batch, 3, "),
        (LULinear(3), (5, 4), "LULinear(3) expects input of shape [batch, 3], got shape (5, 4)"),
        (LULinear(3), (5, 3, 2, 2), "LULinear(3) expects input of shape [batch, 3], got shape (5, 3, 2, 2)"),
        (InvertibleConv1x1(3), (5, 3), "InvertibleConv1x1(3) expects input of shape [batch, 3, height, width]"),
        (InvertibleConv1x1(3, lu=True), (5, 2, 4, 4), "InvertibleConv1x1(3, lu=True) expects input of shape"),
    ],
)
def test_bad_input_shape_raises_helpful_error(layer: torch.nn.Module, shape: tuple[int, ...], message: str) -> None:
    check_rejects_shape(layer, shape, message)

"""Autoregressive flows: MADE's degrees and masks, the masked autoregressive layer (MAF) and IAF as its inverse."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch
from helpers import FlowCase, FlowContract, check_rejects_shape, randomize_parameters, standard_normal
from helpers import single_threaded  # noqa: F401  (a fixture, used through pytestmark)
from torch import Tensor, nn

from course_pkg.flows import (
    MADE,
    Flow,
    Inverse,
    MaskedAutoregressive,
    MaskedLinear,
    Permutation,
    Sequential,
    autoregressive_order,
    hidden_degrees,
    input_degrees,
)
from course_pkg.flows.transformers import Additive, Affine, RationalQuadraticSpline, Transformer
from course_pkg.testing import autograd_batch_jacobian, check_inverse, check_log_det, numerical_batch_jacobian

pytestmark = pytest.mark.usefixtures("single_threaded")


class WithContext(Flow):
    """A conditional layer with its context fixed (a buffer ``[batch, C]``), so the flow checks apply to it."""

    def __init__(self, layer: MaskedAutoregressive, context: Tensor) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("context", context)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.layer(x, self.context)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.layer.inverse(z, self.context)


def spline() -> RationalQuadraticSpline:
    return RationalQuadraticSpline(bins=5, bound=2.0)  # N(0, 1) inputs: some in the tails


TRANSFORMERS = {"affine": Affine, "additive": Additive, "spline": spline}

CASES = [
    FlowCase("maf-affine-natural", lambda: MaskedAutoregressive(4, Affine(), (16, 16)), standard_normal(6, 4)),
    FlowCase(
        "maf-additive-reversed",
        lambda: MaskedAutoregressive(5, Additive(), (12,), order="reversed"),
        standard_normal(6, 5),
        seed=1,
    ),
    FlowCase(
        "maf-spline-random",
        lambda: MaskedAutoregressive(4, spline(), (16, 16), order="random", seed=3),
        standard_normal(6, 4),
        seed=2,
    ),
    FlowCase(
        "maf-affine-given-order-three-hidden-layers",
        lambda: MaskedAutoregressive(4, Affine(scale_bound=2.0), (8, 12, 8), order=[2, 0, 3, 1]),
        standard_normal(6, 4),
        seed=3,
    ),
    FlowCase("iaf-spline", lambda: Inverse(MaskedAutoregressive(3, spline(), (12,))), standard_normal(6, 3), seed=5),
    FlowCase(
        "maf-permutation-maf",
        lambda: Sequential(
            MaskedAutoregressive(4, Affine(), (12,)), Permutation.random(4, seed=0), MaskedAutoregressive(4, spline())
        ),
        standard_normal(6, 4),
        seed=6,
        scale=0.3,  # at 0.5 its inverse is so steep (log-det 12) that central differences are off by 1e-3
    ),
]


class TestAutoregressiveContract(FlowContract):
    @pytest.fixture(params=CASES, ids=lambda case: case.name)
    def case(self, request: pytest.FixtureRequest) -> FlowCase:
        return request.param


def random_layer(
    features: int, transformer: Transformer, order: str | list[int], **options: int
) -> MaskedAutoregressive:
    """A layer of ``(16, 16)`` hidden units with randomised float64 parameters (a random order from a seed)."""
    layer = MaskedAutoregressive(features, transformer, (16, 16), order=order, seed=11, **options)
    return randomize_parameters(layer, seed=12).double()


# ---------------------------------------------------------------------------- orders and degrees


def test_orders_and_the_degrees_they_give() -> None:
    assert autoregressive_order(4).tolist() == [0, 1, 2, 3]
    assert autoregressive_order(4, "reversed").tolist() == [3, 2, 1, 0]
    assert autoregressive_order(4, [2, 0, 3, 1]).tolist() == [2, 0, 3, 1]
    assert torch.equal(autoregressive_order(6, "random", seed=1), autoregressive_order(6, "random", seed=1))
    assert sorted(autoregressive_order(6, "random").tolist()) == list(range(6))
    assert input_degrees(torch.tensor([2, 0, 1])).tolist() == [2, 3, 1], "feature 2 first, then 0, then 1"


def test_hidden_degrees_cycle_through_every_possible_degree() -> None:
    assert hidden_degrees(7, features=4).tolist() == [1, 2, 3, 1, 2, 3, 1]
    assert hidden_degrees(5, features=3, context_features=2).tolist() == [0, 1, 2, 0, 1], "0: the context alone"
    assert hidden_degrees(3, features=1).tolist() == [0, 0, 0]


def test_masked_linear_connects_by_degree() -> None:
    """``M[k, j] = 1`` where ``m(k) >= m(j)``, or ``m(k) > m(j)`` for the strict output layer."""
    inputs, outputs = torch.tensor([1, 2, 3]), torch.tensor([1, 3])
    assert MaskedLinear(inputs, outputs).mask.tolist() == [[1, 0, 0], [1, 1, 1]]
    assert MaskedLinear(inputs, outputs, strict=True).mask.tolist() == [[0, 0, 0], [1, 1, 0]]
    layer = randomize_parameters(MaskedLinear(inputs, outputs, strict=True), seed=0)
    x = torch.randn(4, 3)
    torch.testing.assert_close(layer(x), x @ (layer.weight * layer.mask).T + layer.bias)


@pytest.mark.parametrize("order", ["natural", "reversed", "random"])
@pytest.mark.parametrize("context_features", [0, 2])
def test_made_output_depends_only_on_earlier_features(order: str, context_features: int) -> None:
    """``d MADE(x)_{p D + i} / d x_j != 0`` exactly where ``m(j) < m(i)`` (every allowed dependency is used)."""
    made = randomize_parameters(MADE(4, 3, (12, 12), order, context_features, seed=5), seed=6).double()
    x, context = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, context_features, dtype=torch.float64)
    jacobian = numerical_batch_jacobian(lambda v: made(v, context if context_features else None), x)
    allowed = (made.degrees[:, None] > made.degrees[None, :]).repeat(3, 1)  # [P D, D], block p for parameter p
    assert (jacobian[:, ~allowed] == 0).all(), "an output depends on its own feature or a later one"
    assert (jacobian[:, allowed] != 0).all(), "an output ignores an earlier feature"


def test_made_context_reaches_every_output_the_first_features_too() -> None:
    made = randomize_parameters(MADE(3, 2, (8,), "reversed", context_features=2), seed=7).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    jacobian = autograd_batch_jacobian(lambda c: made(x[:1], c), torch.randn(1, 2, dtype=torch.float64))
    assert (jacobian != 0).all()


def test_with_one_feature_the_numbers_are_learned_constants() -> None:
    """No feature comes before the only one: its transformer's numbers are the same for every input."""
    layer = randomize_parameters(MaskedAutoregressive(1, spline(), (8,)), seed=8).double()
    x = torch.randn(6, 1, dtype=torch.float64)
    numbers = layer.conditioner(x)
    assert torch.equal(numbers, numbers[:1].expand_as(numbers)) and (numbers != 0).all()
    check_log_det(layer, x)
    check_inverse(layer, x)


def test_with_a_context_log_det_and_inverse_hold_for_that_context() -> None:
    context = torch.randn(6, 2, dtype=torch.float64)
    layer = WithContext(random_layer(3, spline(), "random", context_features=2), context)
    x = torch.randn(6, 3, dtype=torch.float64)
    check_log_det(layer, x)
    check_log_det(Inverse(layer), x)
    check_inverse(layer, x)


# ---------------------------------------------------------------------------- the layer's structure


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=list(TRANSFORMERS))
@pytest.mark.parametrize("order", ["natural", "reversed", "random"])
def test_jacobian_is_triangular_in_the_order(order: str, transformer: str) -> None:
    """Rows and columns listed in the order: a lower triangular Jacobian, its diagonal's log summing to the log-det."""
    layer = random_layer(5, TRANSFORMERS[transformer](), order)
    x = torch.randn(4, 5, dtype=torch.float64)
    jacobian = numerical_batch_jacobian(lambda v: layer(v)[0], x)
    ordered = jacobian[:, layer.order][:, :, layer.order]
    assert (torch.triu(ordered, diagonal=1).abs() < 1e-9).all(), "z_i depends on a later feature"
    assert (torch.tril(ordered, diagonal=-1).abs() > 1e-6).sum() > 0, "no z_i depends on an earlier feature"
    diagonal = torch.diagonal(ordered, dim1=1, dim2=2)
    torch.testing.assert_close(layer(x)[1], diagonal.abs().log().sum(dim=1), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=list(TRANSFORMERS))
def test_new_layer_is_the_identity(transformer: str) -> None:
    layer = MaskedAutoregressive(4, TRANSFORMERS[transformer](), order="random", seed=0).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    for method in (layer.forward, layer.inverse):
        output, log_det = method(x)
        torch.testing.assert_close(output, x, atol=1e-14, rtol=0)
        torch.testing.assert_close(log_det, torch.zeros(6, dtype=torch.float64), atol=1e-14, rtol=0)


def count_conditioner_calls(layer: MaskedAutoregressive, run: Callable[[], object]) -> int:
    """How many times ``run()`` calls the layer's conditioner (counted by a forward hook)."""
    calls = []
    handle = layer.conditioner.register_forward_hook(lambda *_: calls.append(1))
    try:
        run()
    finally:
        handle.remove()
    return len(calls)


@pytest.mark.parametrize("features", [1, 3, 6])
def test_density_in_one_pass_inverse_in_one_pass_per_feature(features: int) -> None:
    layer = random_layer(features, spline(), "random")
    x = torch.randn(4, features, dtype=torch.float64)
    assert count_conditioner_calls(layer, lambda: layer(x)) == 1
    assert count_conditioner_calls(layer, lambda: layer.inverse(x)) <= features + 1
    iaf = Inverse(layer)  # the other way round: sampling (its inverse) in one pass
    assert count_conditioner_calls(layer, lambda: iaf.inverse(x)) == 1
    assert count_conditioner_calls(layer, lambda: iaf(x)) <= features + 1


def test_context_changes_the_output_and_is_inverted_with_it() -> None:
    layer = random_layer(3, spline(), "natural", context_features=2)
    x = 3.6 * torch.rand(5, 3, dtype=torch.float64) - 1.8  # inside the spline's interval, not in its tails
    context, other = torch.randn(2, 5, 2, dtype=torch.float64)
    z, log_det = layer(x, context)
    z_other, log_det_other = layer(x, other)
    assert (z != z_other).all(), "every feature's map should depend on the context, the first feature's too"
    assert (log_det != log_det_other).all()
    x_again, inverse_log_det = layer.inverse(z, context)
    torch.testing.assert_close(x_again, x)
    torch.testing.assert_close(inverse_log_det, -log_det)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=list(TRANSFORMERS))
def test_works_under_cpu_autocast(transformer: str, dtype: torch.dtype) -> None:
    """MADE's masked linear layers run in low precision; outputs, log-dets and gradients stay finite."""
    layer = randomize_parameters(MaskedAutoregressive(4, TRANSFORMERS[transformer](), (16, 16)), seed=9)
    x = torch.randn(8, 4).requires_grad_(True)
    with torch.autocast("cpu", dtype=dtype):
        z, log_det = layer(x)
        x_again, _ = layer.inverse(z.detach())
    (z.float().pow(2).sum() + log_det.float().sum()).backward()
    for name, value in [("z", z), ("log_det", log_det), ("inverse", x_again), ("x.grad", x.grad)]:
        assert torch.isfinite(value).all(), name
    assert all(torch.isfinite(parameter.grad).all() for parameter in layer.parameters())


# ---------------------------------------------------------------------------- errors


def test_bad_input_shapes_are_named() -> None:
    layer = MaskedAutoregressive(4, Affine())
    message = "MaskedAutoregressive(features=4) expects input of shape [batch, 4], got shape (5, 3)"
    check_rejects_shape(layer, (5, 3), message)
    check_rejects_shape(layer, (5, 4, 1, 1), "expects input of shape [batch, 4], got shape (5, 4, 1, 1)")
    check_rejects_shape(layer, (4,), "got shape (4,)")


@pytest.mark.parametrize(
    ("context_features", "context", "message"),
    [
        (2, None, "MADE(features=3) needs a context of shape [5, 2] (context_features=2)"),
        (2, torch.zeros(5, 3), "expects a context of shape [5, 2], got (5, 3)"),
        (2, torch.zeros(4, 2), "expects a context of shape [5, 2], got (4, 2)"),
        (0, torch.zeros(5, 2), "was built without a context (context_features=0), but got one"),
    ],
)
def test_bad_contexts_are_named(context_features: int, context: Tensor | None, message: str) -> None:
    layer = MaskedAutoregressive(3, Affine(), context_features=context_features)
    for method in (layer.forward, layer.inverse):
        with pytest.raises(ValueError, match=re.escape(message)):
            method(torch.zeros(5, 3), context)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"order": "sideways"}, "order is 'natural', 'reversed', 'random' or a permutation, got 'sideways'"),
        ({"order": [0, 1, 1]}, "an order of 3 features lists each of 0, ..., 2 once, got [0, 1, 1]"),
        ({"order": [0, 1]}, "an order of 3 features lists each of 0, ..., 2 once"),
        ({"hidden_features": 64}, "hidden_features as a tuple of positive widths"),
        ({"hidden_features": (64, 0)}, "hidden_features as a tuple of positive widths"),
    ],
)
def test_bad_constructor_arguments_are_refused(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        MaskedAutoregressive(3, Affine(), **arguments)


def test_a_network_is_not_a_transformer() -> None:
    with pytest.raises(TypeError, match="takes a transformer from course_pkg.flows.transformers"):
        MaskedAutoregressive(3, nn.Linear(3, 3))  # type: ignore[arg-type]

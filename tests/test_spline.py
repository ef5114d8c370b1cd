"""The rational-quadratic spline (neural spline flows): its knots, its tails, and its numerics at the hard points.

The checks every transformer passes (round trip, ``ladj`` against autograd at random points, bad
params refused) are in ``test_transformers.py``; these are the spline's own.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from helpers import single_threaded  # noqa: F401  (a fixture, used through pytestmark)
from torch import Tensor

from course_pkg.flows.transformers import RationalQuadraticSpline

pytestmark = pytest.mark.usefixtures("single_threaded")

BOUND = 3.0
SPLINE = RationalQuadraticSpline(bins=8, bound=BOUND)
FLOAT32_EPS = torch.finfo(torch.float32).eps
ParamsMaker = Callable[..., Tensor]


def random_params(*shape: int, scale: float = 1.0, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    """``N(0, scale^2)`` unnormalised spline params of shape ``shape + (3 K - 1,)``."""
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, SPLINE.params_per_feature, generator=generator, dtype=dtype)


def extreme_params(*shape: int, seed: int = 0) -> Tensor:
    """Params of size 50 with random signs: bins at their minimum size, derivatives near 0 and near 50."""
    return 50 * torch.sign(random_params(*shape, seed=seed))


def derivative(method: str, x: Tensor, params: Tensor) -> Tensor:
    """``d method(x)/dx`` elementwise, by autograd (the map is elementwise, so the gradient of the sum)."""
    x = x.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(getattr(SPLINE, method)(x, params)[0].sum(), x)
    return gradient


# ---------------------------------------------------------------------------- the mathematics


def test_zero_params_give_the_identity() -> None:
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    for method in ("forward", "inverse"):
        y, ladj = getattr(SPLINE, method)(x, torch.zeros(101, SPLINE.params_per_feature, dtype=torch.float64))
        torch.testing.assert_close(y, x, atol=1e-14, rtol=0, msg=method)
        torch.testing.assert_close(ladj, torch.zeros_like(x), atol=1e-14, rtol=0, msg=f"{method} ladj")


def test_knots_map_to_knots_with_their_derivatives() -> None:
    """``f(x_k) = y_k`` and ``f'(x_k) = d_k``, with ``x_0 = y_0 = -B``, ``x_K = y_K = B`` and ``d_0 = d_K = 1``."""
    params = random_params(5, seed=1).unsqueeze(1).expand(5, SPLINE.bins + 1, -1)
    knots = SPLINE.knots(params[:, 0])
    assert torch.equal(knots.x[:, [0, -1]], torch.tensor([-BOUND, BOUND]).expand(5, 2).double())
    assert torch.equal(knots.y[:, [0, -1]], torch.tensor([-BOUND, BOUND]).expand(5, 2).double())
    assert (knots.x.diff(dim=-1) > 0).all() and (knots.y.diff(dim=-1) > 0).all(), "bins must not be empty"
    assert torch.equal(knots.derivatives[:, [0, -1]], torch.ones(5, 2, dtype=torch.float64))
    y, ladj = SPLINE(knots.x, params)
    torch.testing.assert_close(y, knots.y, atol=1e-14, rtol=0)
    torch.testing.assert_close(ladj, knots.derivatives.log(), atol=1e-13, rtol=0)
    x, inverse_ladj = SPLINE.inverse(knots.y, params)
    torch.testing.assert_close(x, knots.x, atol=1e-14, rtol=0)
    torch.testing.assert_close(inverse_ladj, -knots.derivatives.log(), atol=1e-13, rtol=0)


def test_spline_is_increasing() -> None:
    x = torch.linspace(-BOUND - 1, BOUND + 1, 20001, dtype=torch.float64)
    y, ladj = SPLINE(x, random_params(seed=2).expand(x.numel(), -1))
    assert (y.diff() > 0).all()
    assert torch.isfinite(ladj).all()


def test_points_in_the_tails_pass_unchanged() -> None:
    x = torch.cat((torch.linspace(-1e4, -BOUND - 1e-6, 50), torch.linspace(BOUND + 1e-6, 1e4, 50))).double()
    params = random_params(100, scale=3.0, seed=3)
    for method in ("forward", "inverse"):
        y, ladj = getattr(SPLINE, method)(x, params)
        assert torch.equal(y, x), f"{method}: the tails are the identity"
        assert torch.equal(ladj, torch.zeros_like(x)), f"{method}: ladj is 0 in the tails"
        assert torch.equal(derivative(method, x, params), torch.ones_like(x)), f"{method}: dy/dx is 1 in the tails"


# ---------------------------------------------------------------------------- the hard points


def hard_points(method: str, params: Tensor) -> Tensor:
    """For each of the ``n`` parameter sets ``[n, P]``: every knot (of ``x`` for forward, of ``y`` for inverse),
    the edges ``+-B`` once more, and points far in the tails; ``[n, K + 5]``.
    """
    knots = SPLINE.knots(params)
    on_knots = knots.x if method == "forward" else knots.y
    edges_and_tails = torch.tensor([-BOUND, BOUND, -1e4, 1e4], dtype=params.dtype).expand(params.shape[0], 4)
    return torch.cat((on_knots, edges_and_tails), dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("make_params", [random_params, extreme_params], ids=["normal-params", "params-of-50"])
@pytest.mark.parametrize("method", ["forward", "inverse"])
def test_no_nan_or_inf_in_outputs_or_gradients_at_the_hard_points(
    method: str, make_params: ParamsMaker, dtype: torch.dtype
) -> None:
    raw_params = make_params(64, seed=4).to(dtype)
    x = hard_points(method, raw_params).detach().requires_grad_(True)
    params = raw_params.unsqueeze(1).expand(-1, x.shape[1], -1).detach().requires_grad_(True)
    y, ladj = getattr(SPLINE, method)(x, params)
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
    (y.sum() + ladj.sum()).backward()
    assert torch.isfinite(x.grad).all(), "gradient of the input"
    assert torch.isfinite(params.grad).all(), "gradient of the params"


@pytest.mark.parametrize("make_params", [random_params, extreme_params], ids=["normal-params", "params-of-50"])
@pytest.mark.parametrize("method", ["forward", "inverse"])
def test_ladj_matches_autograd_at_the_hard_points_in_float64(method: str, make_params: ParamsMaker) -> None:
    """At the knots the spline is only once differentiable; its derivative there is still ``d_k`` from both sides."""
    raw_params = make_params(32, seed=5)
    x = hard_points(method, raw_params)
    params = raw_params.unsqueeze(1).expand(-1, x.shape[1], -1)
    _, ladj = getattr(SPLINE, method)(x, params)
    torch.testing.assert_close(ladj, derivative(method, x, params).log(), atol=1e-8, rtol=1e-8)


# ---------------------------------------------------------------------------- float32 over a million points


@pytest.fixture(scope="module")
def million() -> tuple[Tensor, Tensor, Tensor]:
    """``10^6`` float32 points uniform in ``[-4/3 B, 4/3 B]`` (a sixth in each tail), a second such set, and
    ``N(0, 1)`` params for each point."""
    generator = torch.Generator().manual_seed(6)
    x, y = (BOUND * (8 * torch.rand(2, 10**6, generator=generator) - 4) / 3).unbind()
    return x, y, torch.randn(10**6, SPLINE.params_per_feature, generator=generator)


def test_float32_round_trip_of_a_million_points(million: tuple[Tensor, Tensor, Tensor]) -> None:
    """``|f^{-1}(f(x)) - x| <= 1e-5`` wherever ``dy/dx >= 0.1`` (flatter bins magnify ``y``'s rounding in ``x``)."""
    x, _, params = million
    y, ladj = SPLINE(x, params)
    x_again, inverse_ladj = SPLINE.inverse(y, params)
    steep = ladj.exp() >= 0.1
    error = (x_again - x).abs()
    assert error[steep].max() <= 1e-5, f"worst round-trip error {error[steep].max():.3g} where dy/dx >= 0.1"
    assert torch.isfinite(x_again).all() and torch.isfinite(inverse_ladj).all()


def test_float32_inverse_then_forward_returns_y_everywhere(million: tuple[Tensor, Tensor, Tensor]) -> None:
    """``|f(f^{-1}(y)) - y| <= 2e-5`` beyond what rounding ``x`` to float32 costs, ``eps max(|x|, 1) dy/dx``.

    With ``N(0, 1)`` params some bins are steep (``dy/dx`` of several hundred); there even the float32
    number nearest the exact ``f^{-1}(y)`` is off by half an ulp of ``x`` (``1.2e-7`` near ``|x| = 3``),
    which ``f`` magnifies past ``2e-5``: no float32 inverse can do better than that.
    (The excess measured is about ``1e-6``; the textbook form ``2 c / (-b - sqrt(b^2 - 4 a c))``
    alone, which cancels where ``b < 0``, gave ``2e-5``, and round trips of ``1.5e-5``.)
    """
    _, y, params = million
    x, inverse_ladj = SPLINE.inverse(y, params)
    y_again, _ = SPLINE(x, params)
    rounding = FLOAT32_EPS * x.abs().clamp_min(1) * (-inverse_ladj).exp()
    excess = ((y_again - y).abs() - rounding).max()
    assert excess <= 2e-5, f"|f(f^-1(y)) - y| exceeds float32's rounding of x by {excess:.3g}"


# ---------------------------------------------------------------------------- low precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_params_are_computed_in_float32(dtype: torch.dtype) -> None:
    """Extreme low-precision params, points on the knots, at the edges and in the tails: finite, and as in float32."""
    raw_params = extreme_params(32, seed=7)
    x = hard_points("forward", raw_params).float()
    params = raw_params.unsqueeze(1).expand(-1, x.shape[1], -1).to(dtype)
    y, ladj = SPLINE(x, params)
    assert y.dtype == ladj.dtype == torch.float32
    expected_y, expected_ladj = SPLINE(x, params.float())
    assert torch.equal(y, expected_y) and torch.equal(ladj, expected_ladj)
    y_low, ladj_low = SPLINE(x.to(dtype), params)
    assert y_low.dtype == ladj_low.dtype == dtype, "y and ladj come back in x's dtype"
    assert torch.isfinite(y_low).all() and torch.isfinite(ladj_low).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_works_under_cpu_autocast(dtype: torch.dtype) -> None:
    """A conditioner run under autocast hands the spline low-precision params; outputs and gradients stay finite."""
    torch.manual_seed(8)
    conditioner = torch.nn.Linear(4, 3 * SPLINE.params_per_feature)
    x = torch.cat((torch.randn(60, 3), torch.tensor([[-BOUND, BOUND, 1e4]]))).requires_grad_(True)
    with torch.autocast("cpu", dtype=dtype):
        params = 10 * conditioner(torch.randn(61, 4)).unflatten(1, (3, -1))
        assert params.dtype == dtype
        y, ladj = SPLINE(x, params)
        x_again, _ = SPLINE.inverse(y, params)
    assert y.dtype == ladj.dtype == x_again.dtype == torch.float32
    (y.sum() + ladj.sum()).backward()
    for name, value in [("y", y), ("ladj", ladj), ("inverse", x_again), ("x.grad", x.grad)]:
        assert torch.isfinite(value).all(), name
    assert all(torch.isfinite(parameter.grad).all() for parameter in conditioner.parameters())
    steep = ladj.exp() >= 0.1
    torch.testing.assert_close(x_again[steep], x.detach()[steep], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- errors


def test_params_with_the_wrong_last_dimension_are_refused() -> None:
    message = r"RationalQuadraticSpline expects params of shape x.shape \+ \(23,\) = \(4, 3, 23\), got \(4, 3, 22\)"
    for method in ("forward", "inverse"):
        with pytest.raises(ValueError, match=message):
            getattr(SPLINE, method)(torch.zeros(4, 3), torch.zeros(4, 3, 22))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"bins": 1}, "number of bins >= 2"),
        ({"bins": 2.5}, "number of bins >= 2"),
        ({"bound": 0.0}, "positive, finite bound, got 0.0"),
        ({"bound": float("inf")}, "positive, finite bound, got inf"),
        ({"bins": 10, "min_bin_size": 0.1}, "0 < min_bin_size \\* bins < 1"),
        ({"min_derivative": 1.0}, "0 < min_derivative < 1"),
    ],
)
def test_bad_constructor_arguments_are_refused(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RationalQuadraticSpline(**arguments)


def test_params_per_feature_is_three_bins_minus_one() -> None:
    assert [RationalQuadraticSpline(bins).params_per_feature for bins in (2, 5, 8)] == [5, 14, 23]

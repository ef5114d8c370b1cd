"""What every transformer promises: an elementwise monotone map, its inverse, and its log-derivative.

``forward(x, params) -> (y, log|dy/dx|)`` and ``inverse(y, params) -> (x, log|dx/dy|)`` with
``params.shape == x.shape + (P,)``. The spline's own numerics are in ``test_spline.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch
from helpers import single_threaded  # noqa: F401  (a fixture, used through pytestmark)
from torch import Tensor

from course_pkg.flows.transformers import Additive, Affine, RationalQuadraticSpline, Transformer

pytestmark = pytest.mark.usefixtures("single_threaded")

TRANSFORMERS = [Additive(), Affine(), Affine(scale_bound=1.0), RationalQuadraticSpline(bins=5, bound=2.0)]
IDS = ["additive", "affine", "affine-bound-1", "spline"]
# float64 to rounding; float32 to what its rounding allows (the spline's steep bins magnify it most)
TOLERANCES = {torch.float64: 1e-10, torch.float32: 1e-4}


def sample(transformer: Transformer, dtype: torch.dtype, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``x`` ``[6, 3, 2]`` (some of it outside the spline's interval) and ``N(0, 1)`` params for it."""
    generator = torch.Generator().manual_seed(seed)
    x = 1.5 * torch.randn(6, 3, 2, generator=generator, dtype=torch.float64)
    params = torch.randn(6, 3, 2, transformer.params_per_feature, generator=generator, dtype=torch.float64)
    return x.to(dtype), params.to(dtype)


def autograd_log_derivative(method: Callable[[Tensor], tuple[Tensor, Tensor]], x: Tensor) -> Tensor:
    """``log|d method(x)/dx|`` elementwise: the gradient of the sum, since the map is elementwise."""
    x = x.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(method(x)[0].sum(), x)
    return gradient.abs().log()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=IDS)
def test_inverse_undoes_forward_and_negates_its_ladj(transformer: Transformer, dtype: torch.dtype) -> None:
    x, params = sample(transformer, dtype)
    y, ladj = transformer(x, params)
    x_again, inverse_ladj = transformer.inverse(y, params)
    assert y.shape == ladj.shape == x.shape and y.dtype == ladj.dtype == dtype
    tolerance = TOLERANCES[dtype]
    torch.testing.assert_close(x_again, x, atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(inverse_ladj, -ladj, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=IDS)
def test_ladj_is_the_log_derivative(transformer: Transformer, direction: str, dtype: torch.dtype) -> None:
    x, params = sample(transformer, dtype, seed=1)
    method = getattr(transformer, direction)
    _, ladj = method(x, params)
    tolerance = TOLERANCES[dtype]
    torch.testing.assert_close(ladj, autograd_log_derivative(lambda v: method(v, params), x), atol=tolerance, rtol=0)


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=IDS)
def test_each_element_depends_on_its_own_x_and_params_only(transformer: Transformer) -> None:
    x, params = sample(transformer, torch.float64, seed=2)
    y, _ = transformer(x, params)
    changed_x, changed_params = x.clone(), params.clone()
    changed_x[0, 0, 0] += 0.1
    changed_params[0, 0, 0] += 0.1
    for new_y, _ in (transformer(changed_x, params), transformer(x, changed_params)):
        unchanged = torch.ones_like(x, dtype=torch.bool)
        unchanged[0, 0, 0] = False
        assert torch.equal(new_y[unchanged], y[unchanged])


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=IDS)
def test_zero_params_give_the_identity(transformer: Transformer) -> None:
    """So a conditioner whose last layer starts at zero makes a new layer the identity."""
    x, params = sample(transformer, torch.float64, seed=3)
    y, ladj = transformer(x, torch.zeros_like(params))
    torch.testing.assert_close(y, x, atol=1e-14, rtol=0)
    torch.testing.assert_close(ladj, torch.zeros_like(x), atol=1e-14, rtol=0)


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=IDS)
@pytest.mark.parametrize(
    "params_shape",
    [(4, 3), (4, 3, 30), (4, 1, None), (4, 3, 1, None)],
    ids=["no-last-dimension", "too-many", "wrong-features", "extra-dimension"],
)
def test_params_of_the_wrong_shape_are_refused(transformer: Transformer, params_shape: tuple) -> None:
    count = transformer.params_per_feature
    shape = tuple(count if size is None else size for size in params_shape)
    message = (
        f"{type(transformer).__name__} expects params of shape x.shape + ({count},) = (4, 3, {count}), got {shape}"
    )
    for method in (transformer.forward, transformer.inverse):
        with pytest.raises(ValueError, match=re.escape(message)):
            method(torch.zeros(4, 3), torch.zeros(shape))

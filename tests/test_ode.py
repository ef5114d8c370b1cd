"""The ODE solvers: orders of convergence, tuple states, backwards time, tolerances, and bad options."""

from __future__ import annotations

import math
import re

import pytest
import torch
from helpers import single_threaded  # noqa: F401  (the fixture, used through pytestmark)
from torch import Tensor

from course_pkg.ode import odeint

pytestmark = pytest.mark.usefixtures("single_threaded")


def decay(t: Tensor, y: Tensor) -> Tensor:
    """``dy/dt = -y + t``: solution ``y(t) = t - 1 + (y0 + 1) e^{-t}``, time-dependent on purpose."""
    return -y + t


def decay_solution(y0: Tensor, t: float) -> Tensor:
    return t - 1 + (y0 + 1) * math.exp(-t)


@pytest.mark.parametrize("method, order", [("euler", 1), ("rk4", 4)])
def test_fixed_step_error_falls_as_h_to_the_order(method: str, order: int) -> None:
    """Halving the step divides the global error by about ``2^order``."""
    y0 = torch.tensor([0.5, -2.0], dtype=torch.float64)
    errors = [
        (odeint(decay, y0, 0.0, 1.0, method=method, steps=steps) - decay_solution(y0, 1.0)).abs().max().item()
        for steps in (16, 32)
    ]
    assert errors[0] / errors[1] == pytest.approx(2**order, rel=0.15)


def test_rk4_carries_a_tuple_state_and_runs_backwards_in_time() -> None:
    """A rotation ``d(u, v)/dt = (-v, u)`` as a pair of tensors: forward by 1, back by 1, home again."""
    u0, v0 = torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)

    def rotation(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        u, v = state
        return -v, u

    u1, v1 = odeint(rotation, (u0, v0), 0.0, 1.0, method="rk4", steps=50)
    torch.testing.assert_close(u1, u0 * math.cos(1) - v0 * math.sin(1), atol=1e-8, rtol=0)
    u_back, v_back = odeint(rotation, (u1, v1), 1.0, 0.0, method="rk4", steps=50)
    torch.testing.assert_close((u_back, v_back), (u0, v0), atol=1e-8, rtol=0)


@pytest.mark.parametrize("tolerance", [1e-4, 1e-8])
def test_dopri5_meets_its_tolerance(tolerance: float) -> None:
    """Local error control keeps the global error within a small multiple of the tolerance."""
    y0 = torch.tensor([0.5, -2.0], dtype=torch.float64)
    y1 = odeint(decay, y0, 0.0, 1.0, method="dopri5", rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(y1, decay_solution(y0, 1.0), atol=10 * tolerance, rtol=0)


def test_a_derivative_of_the_wrong_shape_is_named() -> None:
    """Without the check an Euler step would broadcast ``[B, 1]`` to ``[B, D]`` silently."""
    with pytest.raises(ValueError, match=r"must return the state's shapes \[\(4, 2\)\], got \[\(4, 1\)\]"):
        odeint(lambda t, y: y[:, :1], torch.zeros(4, 2), 0.0, 1.0, method="euler", steps=2)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"method": "midpoint"}, "method is one of ('euler', 'rk4', 'dopri5'), got 'midpoint'"),
        ({"method": "rk4", "steps": 0}, "'rk4' needs a whole number of steps >= 1, got 0"),
        ({"method": "dopri5", "rtol": 0.0}, "'dopri5' needs positive tolerances"),
        ({"method": "rk4", "adjoint": True}, "adjoint=True uses torchdiffeq's adaptive solver, method='dopri5'"),
    ],
)
def test_bad_options_are_refused(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        odeint(decay, torch.zeros(2), 0.0, 1.0, **options)

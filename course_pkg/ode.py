"""Solving ``dy/dt = f(t, y)`` from ``t0`` to ``t1``: fixed-step Euler and RK4, and adaptive dopri5.

The state ``y`` is a tensor or a tuple of tensors (a continuous flow integrates ``z`` and its
log-det together); ``f(t, y)`` takes ``t`` as a 0-dim tensor and returns a derivative of ``y``'s
structure and shapes. ``t1 < t0`` integrates backwards in time.

- ``'euler'``: ``y_{k+1} = y_k + h f(t_k, y_k)``, ``h = (t1 - t0) / steps``; error ``O(h)``.
- ``'rk4'``: the classical fourth-order Runge-Kutta step, four evaluations; error ``O(h^4)``.
- ``'dopri5'``: torchdiffeq's Dormand-Prince 5(4) pair, which chooses its own steps so that the
  estimated local error stays below ``atol + rtol |y|``.

Gradients flow by backpropagation through every step of the solver (memory grows with the number
of steps), or, with ``adjoint=True``, by the adjoint method (Chen et al. 2018, "Neural ordinary
differential equations"): the backward pass solves the adjoint ODE
``da/dt = -a^T df/dy``, ``dL/dtheta = -int_{t1}^{t0} a^T df/dtheta dt`` backwards from ``t1``, so
memory does not grow with the steps. The adjoint uses torchdiffeq's ``odeint_adjoint`` with
``dopri5`` and the same tolerances for both passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

State = Tensor | tuple[Tensor, ...]
VectorField = Callable[[Tensor, State], State]
Derivative = Callable[[Tensor, tuple[Tensor, ...]], tuple[Tensor, ...]]  # f on tuple states, as the steps use it

METHODS = ("euler", "rk4", "dopri5")


def odeint(
    f: VectorField,
    y0: State,
    t0: float,
    t1: float,
    *,
    method: str = "rk4",
    steps: int = 20,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    adjoint: bool = False,
    adjoint_params: Iterable[nn.Parameter] = (),
) -> State:
    """The solution ``y(t1)`` of ``dy/dt = f(t, y)``, ``y(t0) = y0``; same structure as ``y0``.

    ``steps`` is the number of steps of ``'euler'`` and ``'rk4'``; ``rtol`` and ``atol`` are the
    tolerances of ``'dopri5'``. ``adjoint=True`` (``'dopri5'`` only) computes gradients with respect
    to ``y0`` and ``adjoint_params`` (the parameters ``f`` uses) by the adjoint method.

    >>> decay = lambda t, y: -y
    >>> y1 = odeint(decay, torch.ones(3), 0.0, 1.0, method="rk4", steps=10)
    >>> y1  # exp(-1) = 0.3678794...
    tensor([0.3679, 0.3679, 0.3679])
    """
    expect_solver_options(method, steps, rtol, atol, adjoint)
    is_tuple = isinstance(y0, tuple)
    state = y0 if is_tuple else (y0,)
    checked = _checked(f, state, is_tuple)
    if method == "dopri5":
        import torchdiffeq  # here, not at the top: it imports scipy.integrate, half a second on every import of course_pkg

        times = torch.tensor([t0, t1], dtype=state[0].dtype, device=state[0].device)
        if adjoint:
            solution = torchdiffeq.odeint_adjoint(
                checked, state, times, rtol=rtol, atol=atol, method="dopri5", adjoint_params=tuple(adjoint_params)
            )
        else:
            solution = torchdiffeq.odeint(checked, state, times, rtol=rtol, atol=atol, method="dopri5")
        end = tuple(component[-1] for component in solution)
    else:
        step = euler_step if method == "euler" else rk4_step
        end = _fixed_steps(step, checked, state, t0, t1, steps)
    return end if is_tuple else end[0]


def euler_step(f: Derivative, t: Tensor, y: tuple[Tensor, ...], h: float) -> tuple[Tensor, ...]:
    """One Euler step ``y + h f(t, y)``."""
    return _axpy(y, h, f(t, y))


def rk4_step(f: Derivative, t: Tensor, y: tuple[Tensor, ...], h: float) -> tuple[Tensor, ...]:
    """One classical Runge-Kutta step ``y + h (k1 + 2 k2 + 2 k3 + k4) / 6`` with

    ``k1 = f(t, y)``, ``k2 = f(t + h/2, y + h/2 k1)``, ``k3 = f(t + h/2, y + h/2 k2)``, ``k4 = f(t + h, y + h k3)``.
    """
    k1 = f(t, y)
    k2 = f(t + h / 2, _axpy(y, h / 2, k1))
    k3 = f(t + h / 2, _axpy(y, h / 2, k2))
    k4 = f(t + h, _axpy(y, h, k3))
    slope = tuple((a + 2 * b + 2 * c + d) / 6 for a, b, c, d in zip(k1, k2, k3, k4))
    return _axpy(y, h, slope)


def _fixed_steps(
    step: Callable[[Derivative, Tensor, tuple[Tensor, ...], float], tuple[Tensor, ...]],
    f: Derivative,
    y: tuple[Tensor, ...],
    t0: float,
    t1: float,
    steps: int,
) -> tuple[Tensor, ...]:
    """``steps`` steps of size ``h = (t1 - t0) / steps``, at times ``t_k = t0 + k h``."""
    h = (t1 - t0) / steps
    for k in range(steps):
        t = torch.tensor(t0 + k * h, dtype=y[0].dtype, device=y[0].device)
        y = step(f, t, y, h)
    return y


def _axpy(y: tuple[Tensor, ...], h: float, dy: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return tuple(component + h * derivative for component, derivative in zip(y, dy))


def _checked(f: VectorField, y0: tuple[Tensor, ...], is_tuple: bool) -> Derivative:
    """``f`` on tuple states, raising ``ValueError`` when a derivative's shape is not its state's.

    Without the check an Euler step ``y + h dy`` would broadcast a ``[B, 1]`` derivative silently.
    """
    shapes = [component.shape for component in y0]

    def derivative(t: Tensor, y: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        dy = f(t, y) if is_tuple else (f(t, y[0]),)
        if not isinstance(dy, tuple) or [d.shape for d in dy] != shapes:
            got = [tuple(d.shape) for d in dy] if isinstance(dy, tuple) else type(dy).__name__
            raise ValueError(f"odeint: f(t, y) must return the state's shapes {[tuple(s) for s in shapes]}, got {got}")
        return dy

    return derivative


def expect_solver_options(method: str, steps: int, rtol: float, atol: float, adjoint: bool) -> None:
    """Raise ``ValueError`` unless the options name a solver that :func:`odeint` can run as asked."""
    if method not in METHODS:
        raise ValueError(f"odeint: method is one of {METHODS}, got {method!r}")
    if method != "dopri5" and not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"odeint: {method!r} needs a whole number of steps >= 1, got {steps!r}")
    if method == "dopri5" and not (rtol > 0 and atol > 0):
        raise ValueError(f"odeint: 'dopri5' needs positive tolerances, got rtol={rtol}, atol={atol}")
    if adjoint and method != "dopri5":
        raise ValueError(f"odeint: adjoint=True uses torchdiffeq's adaptive solver, method='dopri5'; got {method!r}")

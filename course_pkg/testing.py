"""Public self-checks: numerical Jacobians and the invariants every flow layer must satisfy.

The invariants are written here once: the log-det is that of the numerical Jacobian
(:func:`check_log_det`), ``inverse`` undoes ``forward`` (:func:`check_inverse`), and each sample
of a batch is transformed on its own (:func:`check_samples_independent`). Students use them in the
visible checks of the exercises, the tests of this package on every layer, and the course's
hidden checks on every submission. Each failed check raises :class:`CheckFailed` with what was
expected, what came back, and by how much they differ.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

BatchMap = Callable[[Tensor], Tensor]


class CheckFailed(AssertionError):
    """A self-check found a flow that breaks one of its promises."""


def numerical_jacobian(f: Callable[[Tensor], Tensor], x: Tensor, eps: float = 1e-6) -> Tensor:
    """Central differences ``J[i, j] = (f_i(x + eps e_j) - f_i(x - eps e_j)) / (2 eps)``.

    ``x`` is a 1-D tensor of size ``d`` and ``f`` maps size-``d`` tensors to size-``m`` tensors;
    returns ``[m, d]``. Use float64: in float32 the rounding error ``~1e-7 / eps`` swamps the result.
    """
    if x.dim() != 1:
        raise ValueError(f"numerical_jacobian expects a 1-D tensor x, got shape {tuple(x.shape)}")
    basis = torch.eye(x.numel(), dtype=x.dtype, device=x.device)
    columns = [(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in basis]
    return torch.stack(columns, dim=1)


def numerical_batch_jacobian(f: BatchMap, x: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-sample Jacobians of a batched map by central differences: ``[batch, D_out, D_in]``.

    ``x`` is ``[batch, *shape]``; ``D_in`` and ``D_out`` count the features of one sample. All
    samples are perturbed at once along the same coordinate, so this costs ``2 D_in`` calls of
    ``f`` and is only right for maps that treat batch elements independently (flows must).
    """
    batch, shape = x.shape[0], x.shape[1:]
    flat = x.reshape(batch, -1)
    columns = []
    with torch.no_grad():
        for j in range(flat.shape[1]):
            step = torch.zeros_like(flat)
            step[:, j] = eps
            plus = f((flat + step).reshape(batch, *shape)).reshape(batch, -1)
            minus = f((flat - step).reshape(batch, *shape)).reshape(batch, -1)
            columns.append((plus - minus) / (2 * eps))
    return torch.stack(columns, dim=2)


def autograd_batch_jacobian(f: BatchMap, x: Tensor) -> Tensor:
    """Per-sample Jacobians of a batched map by reverse-mode autodiff: ``[batch, D_out, D_in]``.

    Uses ``torch.func.vmap(jacrev(...))``: each sample is pushed through ``f`` as a batch of one.
    """
    shape = x.shape[1:]

    def one_sample(x_single: Tensor) -> Tensor:
        return f(x_single.reshape(1, *shape)).reshape(-1)

    flat = x.reshape(x.shape[0], -1)
    return torch.func.vmap(torch.func.jacrev(lambda v: one_sample(v)))(flat)


def log_abs_det(jacobians: Tensor) -> Tensor:
    """``log|det J|`` for a stack of square matrices ``[batch, D, D]`` -> ``[batch]``."""
    return torch.linalg.slogdet(jacobians).logabsdet


def numerical_log_det(f: BatchMap, x: Tensor) -> Tensor:
    """``log|det J|`` of a batched map at every sample of ``x``, by central differences: ``[batch]``."""
    return log_abs_det(numerical_batch_jacobian(f, x))


def check_log_det(layer: nn.Module, x: Tensor, atol: float = 1e-6, rtol: float = 1e-6,
                  what: str = "forward log_det", copy_inputs: bool = False) -> None:
    """Check ``layer(x)``'s ``log_det`` against the log-det of its numerical Jacobian.

    Call it with a float64 ``x`` (and a float64 layer): central differences are exact to about
    ``1e-9`` there, so the default tolerances leave no room for a wrong formula. ``what`` names
    the log-det in the message (for the inverse direction, check ``Inverse(layer)``); for
    ``copy_inputs`` see :func:`check_inverse`.
    """
    z, log_det = _call(layer.forward, x, "forward", copy_inputs)
    expected = numerical_log_det(lambda v: _call(layer, v, "forward", copy_inputs)[0], x)
    assert_close(f"{what} against log|det| of the numerical Jacobian", log_det, expected, atol, rtol)


def check_inverse(layer: nn.Module, x: Tensor, atol: float = 1e-6, rtol: float = 1e-6,
                  copy_inputs: bool = False) -> None:
    """Check that ``inverse(forward(x)) == x`` and that the two log-dets are opposite.

    A layer that changes its input in place fails this check (``x`` is no longer what went in).
    With ``copy_inputs=True`` the layer gets copies of its inputs instead, so that only a check
    made for that property fails it (the course's hidden checks grade it on its own).
    """
    z, forward_log_det = _call(layer.forward, x, "forward", copy_inputs)
    x_again, inverse_log_det = _call(layer.inverse, z, "inverse", copy_inputs)
    assert_close("inverse(forward(x)) against x", x_again, x, atol, rtol)
    assert_close("inverse log_det against minus the forward log_det", inverse_log_det, -forward_log_det, atol, rtol)


def check_samples_independent(layer: nn.Module, x: Tensor, changed: Tensor | None = None,
                              atol: float = 1e-6, rtol: float = 1e-6, copy_inputs: bool = False) -> None:
    """Check that ``layer`` transforms each sample of a batch on its own.

    ``changed`` is ``x`` with some samples changed (by default sample 0 replaced by a copy of the
    last one, which keeps it inside the layer's domain); every other sample must come out of
    ``layer(changed)`` as it came out of ``layer(x)``, with the same log-det. For the inverse
    direction, check ``Inverse(layer)``; for ``copy_inputs`` see :func:`check_inverse`.
    """
    if changed is None:
        changed = x.clone()
        changed[0] = x[-1]
    z, log_det = _call(layer.forward, x, "forward", copy_inputs)
    z_changed, log_det_changed = _call(layer.forward, changed, "forward", copy_inputs)
    keep = [b for b in range(x.shape[0]) if torch.equal(changed[b], x[b])]
    if len(keep) == x.shape[0]:
        raise ValueError("check_samples_independent needs a batch `changed` in which some sample differs from x")
    assert_close("output of the samples that did not change, after changing another sample",
                 z_changed[keep], z[keep], atol, rtol)
    assert_close("log_det of the samples that did not change, after changing another sample",
                 log_det_changed[keep], log_det[keep], atol, rtol)


def _call(method: Callable[[Tensor], tuple[Tensor, Tensor]], x: Tensor, name: str,
          copy_input: bool = False) -> tuple[Tensor, Tensor]:
    """The ``(output, log_det)`` pair that a flow method returns for ``x`` (or for a copy of it)."""
    with torch.no_grad():
        result = method(x.clone() if copy_input else x)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise CheckFailed(f"{name} should return a pair (output, log_det), got {type(result).__name__}")
    return result


def _expect_shape(what: str, value: Tensor, shape: tuple[int, ...]) -> None:
    if not isinstance(value, Tensor) or tuple(value.shape) != shape:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise CheckFailed(f"{what}: expected shape {shape}, got {got}")


def assert_close(what: str, actual: Tensor, expected: Tensor, atol: float = 1e-6, rtol: float = 1e-6) -> None:
    """Raise :class:`CheckFailed` unless ``actual`` is a finite tensor of ``expected``'s shape, close to it.

    The message names ``what`` was compared, the worst entry's expected and actual values, the
    largest error and the tolerance ``atol + rtol * |expected|``.
    """
    if not isinstance(actual, Tensor):
        raise CheckFailed(f"{what}: expected a torch.Tensor, got {type(actual).__name__}")
    _expect_shape(what, actual, tuple(expected.shape))
    actual = actual.to(expected.dtype)
    if not torch.isfinite(expected).all():
        raise CheckFailed(f"{what}: the reference value is not finite ({expected.flatten()[:5].tolist()}); "
                          "the map is singular or overflows at this input")
    if not torch.isfinite(actual).all():
        raise CheckFailed(f"{what}: got non-finite values (NaN or inf): {actual.flatten()[:5].tolist()}")
    error = (actual - expected).abs()
    allowed = atol + rtol * expected.abs()
    if (error > allowed).any():
        worst = int((error - allowed).flatten().argmax())
        raise CheckFailed(
            f"{what}: expected {expected.flatten()[worst].item():.8g}, "
            f"got {actual.flatten()[worst].item():.8g} "
            f"(largest error {error.max().item():.3g}, tolerance {atol:g} + {rtol:g}*|expected|)"
        )

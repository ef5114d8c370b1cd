"""Validation shared by the flow layers: one clear ``ValueError`` instead of a shape error from deep
inside ``torch``, or a silent NaN; for inputs and for constructor arguments.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_LAYOUTS = {2: "[batch, {}]", 4: "[batch, {}, height, width]"}


def expect_input(x: Tensor, layer: str, dims: tuple[int, ...] = (2, 4), size: int | None = None) -> None:
    """Raise ``ValueError`` unless ``x`` has ``x.dim()`` in ``dims`` and, if given, ``x.shape[1] == size``.

    ``dims`` 2 means ``[batch, features]`` and 4 means ``[batch, channels, height, width]``; the
    message names what ``layer`` expected and the shape it got.
    """
    if x.dim() in dims and (size is None or x.shape[1] == size):
        return
    expected = " or ".join(
        _LAYOUTS[dim].format(size if size is not None else ("features" if dim == 2 else "channels")) for dim in dims
    )
    raise ValueError(f"{layer} expects input of shape {expected}, got shape {tuple(x.shape)}")


def expect_in_interval(x: Tensor, layer: str, low: float, high: float, closed: bool) -> None:
    """Raise ``ValueError`` unless every value of ``x`` lies in ``[low, high]`` (``closed``) or ``(low, high)``.

    NaN counts as outside. Under ``torch.func.vmap`` a tensor cannot decide a Python ``if``, and
    under ``torch.compile`` it would split the compiled graph at every layer, so there the check is
    skipped (it is a guard for users, not part of the mathematics).
    """
    if torch.compiler.is_compiling():
        return
    inside = (x >= low) & (x <= high) if closed else (x > low) & (x < high)
    try:
        all_inside = bool(inside.all())
    except RuntimeError:  # vmap refuses data-dependent control flow
        return
    if not all_inside:
        interval = f"[{low:g}, {high:g}]" if closed else f"({low:g}, {high:g})"
        finite = x[torch.isfinite(x)]
        seen = f"[{finite.min().item():.6g}, {finite.max().item():.6g}]" if finite.numel() else "no finite values"
        nan = " and NaN" if torch.isnan(x).any() else ""
        raise ValueError(f"{layer} expects values in {interval}, got values in {seen}{nan}")


def expect_finite(x: Tensor, layer: str, what: str = "input") -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or infinity; the message names ``what`` of ``layer`` it is.

    Skipped under ``torch.func.vmap``, as in :func:`expect_in_interval`.
    """
    try:
        finite = bool(torch.isfinite(x).all())
    except RuntimeError:  # vmap refuses data-dependent control flow
        return
    if not finite:
        kinds = [name for name, found in [("NaN", torch.isnan(x)), ("inf", torch.isinf(x))] if found.any()]
        raise ValueError(f"{layer} expects a finite {what}, got {' and '.join(kinds)} (shape {tuple(x.shape)})")


def expect_at_least_two(function: str, name: str, value: int) -> None:
    """Raise ``ValueError`` unless ``value`` features (or channels) split into a part to keep and one to transform."""
    if value < 2:
        raise ValueError(f"{function} needs at least 2 {name} (one part to keep, one to transform), got {value}")


def expect_parity(function: str, parity: int) -> None:
    """Raise ``ValueError`` unless ``parity`` is 0 or 1."""
    if parity not in (0, 1):
        raise ValueError(f"{function} takes parity 0 or 1, got {parity!r}")


def expect_scale_bound(layer: str, scale_bound: float) -> None:
    """Raise ``ValueError`` unless the bound of an affine coupling's log-scale is positive and finite."""
    if not (scale_bound > 0 and math.isfinite(scale_bound)):
        raise ValueError(f"{layer} needs a positive, finite scale_bound, got {scale_bound}")


def expect_params(transformer: str, x: Tensor, params: Tensor, params_per_feature: int) -> None:
    """Raise ``ValueError`` unless ``params.shape == x.shape + (params_per_feature,)``: a transformer's numbers."""
    if params.shape[:-1] == x.shape and params.dim() == x.dim() + 1 and params.shape[-1] == params_per_feature:
        return
    expected = (*x.shape, params_per_feature)
    raise ValueError(
        f"{transformer} expects params of shape x.shape + ({params_per_feature},) = {expected}, "
        f"got {tuple(params.shape)}"
    )


def expect_spline(transformer: str, bins: int, bound: float, min_bin_size: float, min_derivative: float) -> None:
    """Raise ``ValueError`` unless a spline's arguments give at least two bins of a finite interval, all possible."""
    if not (isinstance(bins, int) and bins >= 2):
        raise ValueError(f"{transformer} needs an integer number of bins >= 2 (one bin is the identity), got {bins!r}")
    if not (bound > 0 and math.isfinite(bound)):
        raise ValueError(f"{transformer} needs a positive, finite bound, got {bound}")
    if not 0 < min_bin_size * bins < 1:
        raise ValueError(
            f"{transformer} needs 0 < min_bin_size * bins < 1 (each bin at least that share of the interval), "
            f"got min_bin_size={min_bin_size} with {bins} bins"
        )
    if not (0 < min_derivative < 1):
        raise ValueError(
            f"{transformer} needs 0 < min_derivative < 1 (the tails' derivative is 1), got {min_derivative}"
        )


def expect_hidden_features(network: str, hidden_features: object) -> None:
    """Raise ``ValueError`` unless ``hidden_features`` is a tuple (or list) of positive widths, one per hidden layer."""
    if not (isinstance(hidden_features, tuple | list) and all(isinstance(w, int) and w > 0 for w in hidden_features)):
        raise ValueError(
            f"{network} takes hidden_features as a tuple of positive widths, one per hidden layer (say (64, 64)), "
            f"got {hidden_features!r}"
        )


def expect_context(layer: str, x: Tensor, context: Tensor | None, context_features: int) -> None:
    """Raise ``ValueError`` unless ``context`` is ``[batch, context_features]`` for ``x``'s batch, or absent if 0."""
    if context_features == 0:
        if context is not None:
            raise ValueError(f"{layer} was built without a context (context_features=0), but got one")
        return
    expected = f"[{x.shape[0]}, {context_features}]"
    if context is None:
        raise ValueError(f"{layer} needs a context of shape {expected} (context_features={context_features})")
    if context.shape != (x.shape[0], context_features):
        raise ValueError(f"{layer} expects a context of shape {expected}, got {tuple(context.shape)}")

"""Hidden checks of ex02_elementwise_linear (instructor-only).

Ground truth is the log-determinant of a numerical Jacobian (central differences in float64) and,
for gradients, central differences in the parameters. The checks never assume how a student names
or stores parameters: every trainable parameter is moved away from where it started (so an
identity layer cannot pass), and ActNorm's initialisation is judged by what its outputs do.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from course_grading.engine.expectations import (
    DTYPES,
    TOLERANCE,
    expect_close,
    expect_correct_parameter_gradients,
    expect_flow_outputs_untouched_shapes_and_dtypes,
    expect_samples_independent,
    expect_tensor,
    forward,
    inverse,
    randomise_parameters,
    single_threaded_checks,
)
from course_pkg import testing as reference
from course_pkg.flows import Inverse, elementwise, linear
from course_grading.engine.grader import Registry

REGISTRY = Registry()
REGISTRY.forbidden = {
    # ActNorm's reference forward is Affine's: subclassing Affine is delegation too.
    "ActNorm": [elementwise.ActNorm, elementwise.Affine],
    "LeakyReLUFlow": [elementwise.LeakyReLUFlow],
    "LULinear": [linear.LULinear, linear.LUWeight],
    "SigmoidFlow": [elementwise.Sigmoid, elementwise.Logit, elementwise._sigmoid_with_log_det,
                    elementwise._logit_with_log_det],
}
check = single_threaded_checks(REGISTRY)


# -------------------------------------------------------------------------------------- helpers


def away_from_zero(*shape: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Random values with ``|x| >= 0.05``: central differences never straddle a kink at 0."""
    values = torch.randn(*shape, dtype=dtype)
    return torch.sign(values) * (0.05 + values.abs())


# --------------------------------------------------------------------------------------- ActNorm


def channel_data(shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> Tensor:
    """Data whose channels have different means and spreads, and (for images) spatial structure."""
    channels = shape[1]
    view = (1, channels) + (1,) * (len(shape) - 2)
    means = torch.linspace(-3.0, 4.0, channels, dtype=dtype).view(view)
    spreads = torch.linspace(0.3, 4.0, channels, dtype=dtype).view(view)
    noise = torch.randn(*shape, dtype=dtype)
    if len(shape) == 4:  # a pattern over the pixels: per-pixel statistics differ from per-channel ones
        height, width = shape[2:]
        rows = torch.linspace(-1.0, 1.0, height, dtype=dtype).view(height, 1)
        columns = torch.linspace(-1.0, 1.0, width, dtype=dtype).view(1, width)
        noise = noise + 1.5 * rows + columns
    return means + spreads * noise


def initialised_actnorm(ActNorm, shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> nn.Module:
    """An ActNorm initialised on a first batch, then with every parameter randomised."""
    layer = ActNorm(shape[1]).to(dtype)
    forward(layer, channel_data(shape, dtype))
    randomise_parameters(layer, channel_data(shape, dtype))
    return layer


def fitted_channel_map(x: Tensor, z: Tensor) -> Callable[[Tensor], Tensor]:
    """The per-channel affine map ``x -> a x + c`` that sends ``x`` to ``z`` (least squares, exact for ActNorm)."""
    dims = [0, *range(2, x.dim())]
    x_centred = x - x.mean(dim=dims, keepdim=True)
    z_centred = z - z.mean(dim=dims, keepdim=True)
    slope = (x_centred * z_centred).sum(dim=dims, keepdim=True) / (x_centred**2).sum(dim=dims, keepdim=True)
    offset = z.mean(dim=dims, keepdim=True) - slope * x.mean(dim=dims, keepdim=True)
    return lambda v: slope * v + offset


@check("ActNorm")
def initialisation_standardises_each_channel(ActNorm) -> None:
    """the first forward call gives each channel mean 0 and std 1, for [B, C] and [B, C, H, W]"""
    for shape, dtype in [((512, 4), torch.float32), ((32, 3, 4, 4), torch.float64), ((512, 1), torch.float64)]:
        layer = ActNorm(shape[1]).to(dtype)
        x = channel_data(shape, dtype)
        z, log_det = forward(layer, x)
        expect_tensor(f"z for x of shape {shape}", z, shape, dtype)
        dims = [0, *range(2, len(shape))]
        means, stds = z.mean(dim=dims), z.std(dim=dims, correction=0)
        for c in range(shape[1]):
            assert abs(means[c].item()) < 1e-4 and abs(stds[c].item() - 1) < 5e-3, (
                f"channel {c} of the output of the first forward call on x of shape {shape}: expected mean 0 and "
                f"std 1 (over the batch and every pixel), got mean {means[c].item():.4g} and std {stds[c].item():.4g}")


def expect_actnorm_log_det(ActNorm, shapes) -> None:
    """An initialised, randomised ActNorm's log_det against log|det| of its numerical Jacobian."""
    for shape in shapes:
        layer = initialised_actnorm(ActNorm, shape)
        x = channel_data(shape)
        z, log_det = forward(layer, x)
        expect_tensor(f"log_det for x of shape {shape}", log_det, (shape[0],), torch.float64)
        reference.check_log_det(layer, x, what=f"log_det for x of shape {shape}", copy_inputs=True)


@check("ActNorm")
def actnorm_log_det_matches_numerical_jacobian(ActNorm) -> None:
    """log_det of [B, C] inputs equals log|det| of the numerical Jacobian, with random parameters"""
    expect_actnorm_log_det(ActNorm, [(4, 3), (3, 6)])


@check("ActNorm")
def actnorm_log_det_counts_every_pixel(ActNorm) -> None:
    """log_det of [B, C, H, W] inputs counts every pixel (H * W), with random parameters"""
    expect_actnorm_log_det(ActNorm, [(3, 2, 3, 2), (2, 3, 2, 2)])


@check("ActNorm")
def actnorm_inverse_shapes_dtypes_and_independence(ActNorm) -> None:
    """inverse undoes forward with log_det negated; shapes, float32/float64, samples independent"""
    for dtype in DTYPES:
        for shape in [(6, 3), (4, 3, 2, 5)]:
            layer = initialised_actnorm(ActNorm, shape, dtype)
            x = channel_data(shape, dtype)
            expect_flow_outputs_untouched_shapes_and_dtypes(layer, x)
            reference.check_inverse(layer, x, TOLERANCE[dtype], TOLERANCE[dtype], copy_inputs=True)
            expect_samples_independent(layer, x, TOLERANCE[dtype])


@check("ActNorm")
def actnorm_initialises_only_once(ActNorm) -> None:
    """later forward calls keep the map set up by the first one"""
    for shape in [(64, 3), (8, 2, 3, 3)]:
        layer = ActNorm(shape[1]).to(torch.float64)
        first = channel_data(shape)
        z_first, _ = forward(layer, first)
        assert (z_first - first).abs().max().item() > 1e-3, (
            f"the first forward call (x of shape {shape}) returned its input unchanged: it should initialise the layer")
        first_map = fitted_channel_map(first, z_first)
        for call in (2, 3):
            later = 0.5 * channel_data(shape) - 2.0  # other statistics than the first batch
            expect_close(f"output of forward call {call} (x of shape {shape}, other statistics than the first "
                         "batch) against the map set up by the first call (ActNorm initialises only once)",
                         forward(layer, later)[0], first_map(later))


@check("ActNorm")
def actnorm_keeps_its_initialisation_through_state_dict(ActNorm) -> None:
    """a fresh ActNorm that loads an initialised one's state_dict is not initialised again"""
    for shape in [(64, 3), (8, 2, 3, 3)]:
        trained = initialised_actnorm(ActNorm, shape)
        x = channel_data(shape)
        trained_map = fitted_channel_map(x, forward(trained, x)[0])
        fresh = ActNorm(shape[1]).to(torch.float64)
        fresh.load_state_dict(trained.state_dict())
        later = 0.5 * channel_data(shape) - 2.0
        expect_close(f"first forward call of a fresh ActNorm({shape[1]}) after load_state_dict against the loaded "
                     "layer's map (the state_dict must record that the layer is initialised)",
                     forward(fresh, later)[0], trained_map(later))


@check("ActNorm")
def actnorm_gradients_reach_every_parameter(ActNorm) -> None:
    """gradients of z and log_det reach every parameter and match finite differences"""
    for shape in [(5, 3), (3, 2, 2, 3)]:
        layer = initialised_actnorm(ActNorm, shape)
        expect_correct_parameter_gradients(layer, channel_data(shape))


# --------------------------------------------------------------------------------- LeakyReLUFlow


def leaky_relu(x: Tensor, slope: float) -> Tensor:
    return torch.where(x < 0, slope * x, x)


def expect_leaky_relu_forward(layer: nn.Module, slope: float, x: Tensor) -> None:
    """z = leaky_relu(x) and log_det = log|det| of the numerical Jacobian (float64 ``x``)."""
    z, log_det = forward(layer, x)
    where = f"slope {slope:g}, x of shape {tuple(x.shape)}"
    expect_close(f"z ({where}) against x where x >= 0 and slope * x where x < 0", z, leaky_relu(x, slope))
    reference.check_log_det(layer, x, what=f"log_det ({where})", copy_inputs=True)


def expect_leaky_relu_inverse(layer: nn.Module, slope: float, z: Tensor) -> None:
    """inverse maps z back and its log_det is log|det| of the inverse's numerical Jacobian (float64)."""
    x, log_det = inverse(layer, z)
    where = f"slope {slope:g}, z of shape {tuple(z.shape)}"
    expect_close(f"inverse output ({where}) against z where z >= 0 and z / slope where z < 0", x, leaky_relu(z, 1 / slope))
    reference.check_log_det(Inverse(layer), z, what=f"inverse log_det ({where})", copy_inputs=True)
    reference.check_inverse(layer, away_from_zero(*z.shape), 1e-9, 1e-9, copy_inputs=True)


@check("LeakyReLUFlow")
def leaky_relu_forward_and_log_det(LeakyReLUFlow) -> None:
    """z = x or a x by sign, and log_det matches the numerical Jacobian, default slope 0.1 included"""
    for layer, slope in [(LeakyReLUFlow(), 0.1), (LeakyReLUFlow(0.37), 0.37), (LeakyReLUFlow(negative_slope=0.01), 0.01)]:
        for shape in [(5, 4), (3, 2, 2, 2)]:
            expect_leaky_relu_forward(layer.to(torch.float64), slope, away_from_zero(*shape))


@check("LeakyReLUFlow")
def leaky_relu_inverse_and_log_det(LeakyReLUFlow) -> None:
    """inverse undoes forward, and its log_det matches the inverse's numerical Jacobian"""
    for slope in (0.1, 0.37):
        layer = LeakyReLUFlow(slope)
        for shape in [(5, 4), (3, 2, 2, 2)]:
            expect_leaky_relu_inverse(layer, slope, away_from_zero(*shape))


@check("LeakyReLUFlow")
def leaky_relu_shapes_dtypes_and_independence(LeakyReLUFlow) -> None:
    """shapes and float32/float64 kept, inputs not changed in place, samples independent"""
    layer = LeakyReLUFlow(0.2)
    for dtype in DTYPES:
        for shape in [(1, 1), (7, 3), (2, 3, 4, 4)]:
            x = away_from_zero(*shape, dtype=dtype)
            expect_flow_outputs_untouched_shapes_and_dtypes(layer, x)
            expect_close(f"z for {dtype} x of shape {shape} against x where x >= 0 and 0.2 x where x < 0",
                         forward(layer, x)[0], leaky_relu(x, 0.2), TOLERANCE[dtype])
            if shape[0] > 1:
                expect_samples_independent(layer, x, TOLERANCE[dtype])


@check("LeakyReLUFlow")
def leaky_relu_works_for_slopes_above_one(LeakyReLUFlow) -> None:
    """any positive slope is a bijection: slopes above 1 too"""
    for slope in (2.5, 7.0):
        layer = LeakyReLUFlow(slope)
        for shape in [(5, 4), (3, 2, 2, 2)]:
            expect_leaky_relu_forward(layer, slope, away_from_zero(*shape))
            expect_leaky_relu_inverse(layer, slope, away_from_zero(*shape))


# -------------------------------------------------------------------------------------- LULinear


def random_lu_linear(LULinear, features: int, dtype: torch.dtype = torch.float64) -> nn.Module:
    layer = LULinear(features).to(dtype)
    randomise_parameters(layer, torch.randn(3, features, dtype=dtype))
    return layer


# A dense determinant or inverse costs O(d^3); W = P L U makes both unnecessary.
DENSE_LINEAR_ALGEBRA = {
    torch.det: "torch.det", torch.linalg.det: "torch.linalg.det", torch.Tensor.det: "Tensor.det",
    torch.slogdet: "torch.slogdet", torch.linalg.slogdet: "torch.linalg.slogdet", torch.Tensor.slogdet: "Tensor.slogdet",
    torch.logdet: "torch.logdet", torch.Tensor.logdet: "Tensor.logdet",
    torch.inverse: "torch.inverse", torch.Tensor.inverse: "Tensor.inverse",
    torch.linalg.inv: "torch.linalg.inv", torch.linalg.inv_ex: "torch.linalg.inv_ex",
}


class RecordingDenseLinearAlgebra(TorchFunctionMode):
    """Records calls of the functions in ``DENSE_LINEAR_ALGEBRA``, however they were imported or named."""

    def __init__(self) -> None:
        super().__init__()
        self.called: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = DENSE_LINEAR_ALGEBRA.get(func) if _hashable(func) else None
        if name is not None and name not in self.called:
            self.called.append(name)
        return func(*args, **(kwargs or {}))


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


@check("LULinear")
def lu_linear_log_det_matches_numerical_jacobian(LULinear) -> None:
    """log_det equals log|det| of the numerical Jacobian, with random parameters"""
    for features in (3, 5):
        layer = random_lu_linear(LULinear, features)
        x = torch.randn(4, features, dtype=torch.float64)
        z, log_det = forward(layer, x)
        expect_tensor(f"log_det for x of shape {tuple(x.shape)}", log_det, (4,), torch.float64)
        reference.check_log_det(layer, x, what=f"log_det (features={features})", copy_inputs=True)


@check("LULinear")
def lu_linear_inverse_to_1e_6_in_float64(LULinear) -> None:
    """inverse undoes forward to 1e-6 in float64, and its log_det matches its numerical Jacobian"""
    for features in (3, 5):
        layer = random_lu_linear(LULinear, features)
        x = torch.randn(6, features, dtype=torch.float64)
        reference.check_inverse(layer, x, 1e-6, 1e-6, copy_inputs=True)
        z = torch.randn(6, features, dtype=torch.float64)
        x_from_z, _ = inverse(layer, z)
        expect_close(f"forward(inverse(z)) against z (features={features})", forward(layer, x_from_z)[0], z)
        reference.check_log_det(Inverse(layer), z, what=f"inverse log_det (features={features})", copy_inputs=True)


@check("LULinear")
def lu_linear_avoids_dense_determinants_and_inverses(LULinear) -> None:
    """log_det and inverse use the factors, never det, slogdet, logdet or inverse of W"""
    layer = random_lu_linear(LULinear, 4)
    x = torch.randn(5, 4, dtype=torch.float64)
    with RecordingDenseLinearAlgebra() as recorder:
        z, _ = forward(layer, x)
    forward_calls = list(recorder.called)
    with RecordingDenseLinearAlgebra() as recorder:
        inverse(layer, z)
    inverse_calls = list(recorder.called)
    assert not forward_calls and not inverse_calls, (
        f"expected no dense determinant or inverse (O(d^3)), got forward calling {forward_calls or 'none'} and "
        f"inverse calling {inverse_calls or 'none'}; use U's diagonal for log_det and triangular solves for the inverse")


@check("LULinear")
def lu_linear_shapes_dtypes_and_independence(LULinear) -> None:
    """shapes and float32/float64 kept, inputs not changed in place, samples independent"""
    for dtype in DTYPES:
        for batch, features in [(1, 1), (6, 4)]:
            layer = random_lu_linear(LULinear, features, dtype)
            x = torch.randn(batch, features, dtype=dtype)
            expect_flow_outputs_untouched_shapes_and_dtypes(layer, x)
            if batch > 1:
                expect_samples_independent(layer, x, TOLERANCE[dtype])


@check("LULinear")
def lu_linear_gradients_reach_every_parameter(LULinear) -> None:
    """gradients of z and log_det reach every parameter and match finite differences"""
    for features in (2, 4):
        layer = random_lu_linear(LULinear, features)
        expect_correct_parameter_gradients(layer, torch.randn(3, features, dtype=torch.float64))



# ---------------------------------------------------------------------- SigmoidFlow (diagnosis)


def sigmoid_log_det(x: Tensor) -> Tensor:
    """The given forward's log-det, ``sum_i log sigmoid'(x_i) = sum_i [log sigmoid(x_i) + log sigmoid(-x_i)]``: [B]."""
    return (F.logsigmoid(x) + F.logsigmoid(-x)).flatten(1).sum(dim=1)


def inside_unit_interval(*shape: int) -> Tensor:
    """float64 values in ``(0.05, 0.95)``, where the logit's numerical Jacobian is well conditioned."""
    return 0.05 + 0.9 * torch.rand(*shape, dtype=torch.float64)


def expect_sigmoid_inverse_log_det(SigmoidFlow, shapes: list[tuple[int, ...]]) -> None:
    """The inverse's log_det against log|det| of the logit's numerical Jacobian, for z of each shape."""
    for shape in shapes:
        reference.check_log_det(Inverse(SigmoidFlow()), inside_unit_interval(*shape),
                                what=f"inverse log_det for z of shape {shape}", copy_inputs=True)


@check("SigmoidFlow")
def sigmoid_inverse_log_det_matches_numerical_jacobian(SigmoidFlow) -> None:
    """inverse log_det of [B, D] inputs equals log|det| of the numerical Jacobian of the logit"""
    expect_sigmoid_inverse_log_det(SigmoidFlow, [(4, 3), (3, 6), (1, 1)])


@check("SigmoidFlow")
def sigmoid_inverse_log_det_counts_every_pixel(SigmoidFlow) -> None:
    """inverse log_det of [B, C, H, W] inputs sums over every channel and pixel (numerical Jacobian)"""
    expect_sigmoid_inverse_log_det(SigmoidFlow, [(3, 2, 3, 2), (2, 1, 4, 3)])


@check("SigmoidFlow")
def sigmoid_round_trip_negates_log_det(SigmoidFlow) -> None:
    """inverse undoes forward and its log_det is minus the forward one; shapes and float32/float64 kept"""
    layer = SigmoidFlow()
    for dtype in DTYPES:
        for shape in [(6, 4), (3, 2, 3, 3)]:
            x = 1.5 * torch.randn(*shape, dtype=dtype)
            expect_flow_outputs_untouched_shapes_and_dtypes(layer, x)
            reference.check_inverse(layer, x, TOLERANCE[dtype], TOLERANCE[dtype], copy_inputs=True)


@check("SigmoidFlow")
def sigmoid_forward_unchanged(SigmoidFlow) -> None:
    """forward is the given one: z = sigmoid(x) and log_det = sum of log sigmoid(x) + log(1 - sigmoid(x))"""
    layer = SigmoidFlow()
    for shape in [(5, 4), (3, 2, 2, 3)]:
        x = 2 * torch.randn(*shape, dtype=torch.float64)
        z, log_det = forward(layer, x)
        expect_close(f"z for x of shape {shape} against sigmoid(x)", z, torch.sigmoid(x))
        expect_close(f"log_det for x of shape {shape} against the given forward's", log_det, sigmoid_log_det(x))

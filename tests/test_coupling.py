"""Coupling layers: masks, NICE's additive and RealNVP's affine coupling, on vectors and on images."""

from __future__ import annotations

import pytest
import torch
from helpers import FlowCase, FlowContract, check_rejects_shape, randomize_parameters, standard_normal
from helpers import single_threaded  # noqa: F401  (a fixture, used through pytestmark)
from torch import Tensor

from course_pkg.flows import (
    AdditiveCoupling,
    AffineCoupling,
    Coupling,
    SplitAdditiveCoupling,
    SplitAffineCoupling,
    SplitCoupling,
    alternating_mask,
    channel_mask,
    checkerboard_mask,
    half_mask,
    half_split,
)
from course_pkg.flows.transformers import Affine, RationalQuadraticSpline
from course_pkg.nets import MLP, ResNet
from course_pkg.testing import autograd_batch_jacobian

pytestmark = pytest.mark.usefixtures("single_threaded")


def fixed_image_mask() -> Tensor:
    """A full ``[C, H, W]`` mask with no pattern, drawn once from a seed."""
    return (torch.rand(2, 3, 3, generator=torch.Generator().manual_seed(5)) < 0.5).float()


CASES = [
    FlowCase(
        "additive-vectors",
        lambda: AdditiveCoupling(alternating_mask(5), MLP(5, 5, hidden_features=8)),
        standard_normal(6, 5),
    ),
    FlowCase(
        "affine-vectors-half",
        lambda: AffineCoupling(half_mask(4), MLP(4, 8, hidden_features=8)),
        standard_normal(6, 4),
        seed=1,
    ),
    FlowCase(
        "affine-vectors-odd",
        lambda: AffineCoupling(alternating_mask(5, parity=1), MLP(5, 10, hidden_features=8, num_hidden_layers=1)),
        standard_normal(6, 5),
        seed=2,
    ),
    FlowCase(
        "additive-checkerboard-images",
        lambda: AdditiveCoupling(checkerboard_mask(4, 4), ResNet(2, 2, hidden_channels=4)),
        standard_normal(3, 2, 4, 4),
        seed=3,
    ),
    FlowCase(
        "affine-checkerboard-images",
        lambda: AffineCoupling(checkerboard_mask(4, 4, parity=1).unsqueeze(0), ResNet(2, 4, hidden_channels=4)),
        standard_normal(3, 2, 4, 4),
        seed=4,
    ),
    FlowCase(
        "affine-channel-images",
        lambda: AffineCoupling(channel_mask(4, parity=1), ResNet(4, 8, hidden_channels=4, num_blocks=2)),
        standard_normal(3, 4, 3, 3),
        seed=5,
    ),
    FlowCase(
        "affine-full-image-mask",
        lambda: AffineCoupling(fixed_image_mask(), ResNet(2, 4, hidden_channels=4)),
        standard_normal(3, 2, 3, 3),
        seed=6,
    ),
    FlowCase(
        "spline-vectors",
        lambda: Coupling(alternating_mask(5), MLP(5, 14 * 5, hidden_features=8), RationalQuadraticSpline(5, 4.0)),
        standard_normal(6, 5),
        seed=11,
    ),
    FlowCase(
        "spline-checkerboard-images",
        lambda: Coupling(
            checkerboard_mask(3, 3), ResNet(2, 14 * 2, hidden_channels=4), RationalQuadraticSpline(5, 4.0)
        ),
        standard_normal(3, 2, 3, 3),
        seed=12,
        scale=0.15,  # a random ResNet at 0.5 makes bins so steep that central differences are off by 0.5 in log-det
    ),
    FlowCase(
        "split-spline-keeps-last-3-of-5",
        lambda: SplitCoupling(5, 1, MLP(3, 14 * 2, hidden_features=8), RationalQuadraticSpline(5, 4.0)),
        standard_normal(6, 5),
        seed=13,
        scale=0.3,
    ),
    FlowCase(
        "split-affine-first-half",
        lambda: SplitAffineCoupling(4, 0, MLP(2, 2 * 2, hidden_features=8)),
        standard_normal(6, 4),
        seed=7,
    ),
    FlowCase(
        "split-affine-odd-keeps-first-2-of-5",
        lambda: SplitAffineCoupling(5, 0, MLP(2, 2 * 3, hidden_features=8, num_hidden_layers=1)),
        standard_normal(6, 5),
        seed=8,
    ),
    FlowCase(
        "split-affine-odd-keeps-last-3-of-5",
        lambda: SplitAffineCoupling(5, 1, MLP(3, 2 * 2, hidden_features=8), scale_bound=1.5),
        standard_normal(6, 5),
        seed=9,
    ),
    FlowCase(
        "split-additive-keeps-last-half",
        lambda: SplitAdditiveCoupling(6, 1, MLP(3, 3, hidden_features=8)),
        standard_normal(6, 6),
        seed=10,
    ),
]


class TestCouplingContract(FlowContract):
    @pytest.fixture(params=CASES, ids=lambda case: case.name)
    def case(self, request: pytest.FixtureRequest) -> FlowCase:
        return request.param


def sample_mask(layer: Coupling | SplitCoupling, x: Tensor) -> Tensor:
    """The layer's mask (a split coupling's: that of its mask form) broadcast to one sample's shape and flattened."""
    return layer.mask.expand(x.shape[1:]).reshape(-1).to(torch.bool)


# ---------------------------------------------------------------------------- masks


def test_checkerboard_mask_is_one_exactly_where_i_plus_j_has_the_parity() -> None:
    for parity in (0, 1):
        mask = checkerboard_mask(3, 4, parity)
        assert mask.shape == (3, 4) and mask.dtype == torch.get_default_dtype()
        for i in range(3):
            for j in range(4):
                assert mask[i, j] == float((i + j) % 2 == parity), f"parity {parity}, pixel ({i}, {j})"


def test_vector_masks() -> None:
    torch.testing.assert_close(half_mask(5), torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(alternating_mask(5), torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0]))
    torch.testing.assert_close(alternating_mask(5, parity=1), torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0]))


def test_channel_mask_splits_the_channels_in_halves() -> None:
    assert channel_mask(4).shape == (4, 1, 1)
    torch.testing.assert_close(channel_mask(4).flatten(), torch.tensor([1.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(channel_mask(4, parity=1).flatten(), torch.tensor([0.0, 0.0, 1.0, 1.0]))


@pytest.mark.parametrize(
    ("make_mask", "message"),
    [
        (lambda: half_mask(1), "at least 2 features"),
        (lambda: alternating_mask(4, parity=2), "parity 0 or 1"),
        (lambda: checkerboard_mask(0, 3), "positive height and width"),
        (lambda: channel_mask(1), "at least 2 channels"),
    ],
)
def test_masks_reject_bad_arguments(make_mask, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        make_mask()


# ---------------------------------------------------------------------------- the coupling's structure


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_new_coupling_is_exactly_the_identity(case: FlowCase) -> None:
    layer = case.make_layer().double()  # not randomised: the zero-initialised conditioner
    x = case.make_input(torch.Generator().manual_seed(0))
    z, log_det = layer(x)
    x_again, inverse_log_det = layer.inverse(x)
    tolerance = 1e-13 if isinstance(layer.transformer, RationalQuadraticSpline) else 0.0  # the spline: to rounding
    for name, value, expected in [("z", z, x), ("inverse(x)", x_again, x)]:
        torch.testing.assert_close(value, expected, atol=tolerance, rtol=0, msg=f"a new coupling layer: {name} != x")
    for name, value in [("log_det", log_det), ("inverse log_det", inverse_log_det)]:
        torch.testing.assert_close(value, torch.zeros_like(value), atol=tolerance, rtol=0, msg=f"a new layer's {name}")


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_masked_features_pass_unchanged_and_the_others_change(case: FlowCase) -> None:
    layer, x = case.build()
    mask = sample_mask(layer, x)
    with torch.no_grad():
        z = layer(x)[0].reshape(x.shape[0], -1)
    flat = x.reshape(x.shape[0], -1)
    assert torch.equal(z[:, mask], flat[:, mask]), "features with mask == 1 must pass through exactly"
    assert (z[:, ~mask] != flat[:, ~mask]).all(), "features with mask == 0 should be transformed"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_jacobian_is_block_triangular_with_diagonal_blocks(case: FlowCase) -> None:
    """``dz_kept/dx = [I 0]``; ``dz_others/dx_others`` is diagonal; ``dz_others/dx_kept`` holds the conditioner."""
    layer, x = case.build()
    mask = sample_mask(layer, x)
    jacobian = autograd_batch_jacobian(lambda v: layer(v)[0], x)
    eye = torch.eye(mask.numel(), dtype=x.dtype).expand_as(jacobian)
    torch.testing.assert_close(jacobian[:, mask], eye[:, mask], atol=0, rtol=0, msg="rows of the unchanged features")
    others_block = jacobian[:, ~mask][:, :, ~mask]
    diagonal = torch.diagonal(others_block, dim1=1, dim2=2)
    torch.testing.assert_close(others_block, torch.diag_embed(diagonal), atol=0, rtol=0, msg="d z_others / d x_others")
    assert jacobian[:, ~mask][:, :, mask].abs().sum() > 0, "the transformed features should depend on the kept ones"
    torch.testing.assert_close(layer(x)[1], diagonal.abs().log().sum(dim=1), msg="log_det against the diagonal")


def test_affine_coupling_follows_its_equation() -> None:
    """``z = mask x + (1 - mask)(x exp(s) + t)``, ``[raw_s, t] = conditioner(mask x)``, ``s = b tanh(raw_s / b)``."""
    mask = alternating_mask(4)
    layer = randomize_parameters(AffineCoupling(mask, MLP(4, 8, hidden_features=8), scale_bound=1.5), seed=7).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    raw_log_scale, shift = layer.conditioner(mask * x).chunk(2, dim=1)
    log_scale = 1.5 * torch.tanh(raw_log_scale / 1.5)
    expected = mask * x + (1 - mask) * (x * torch.exp(log_scale) + shift)
    z, log_det = layer(x)
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(log_det, ((1 - mask) * log_scale).sum(dim=1))


def test_additive_coupling_follows_its_equation_and_preserves_volume() -> None:
    mask = checkerboard_mask(3, 3)
    layer = randomize_parameters(AdditiveCoupling(mask, ResNet(2, 2, hidden_channels=4)), seed=8).double()
    x = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    z, log_det = layer(x)
    torch.testing.assert_close(z, x + (1 - mask) * layer.conditioner(mask * x))
    assert torch.equal(log_det, torch.zeros(4, dtype=torch.float64))


def test_affine_log_scale_stays_bounded_for_huge_conditioner_outputs() -> None:
    layer = AffineCoupling(half_mask(4), MLP(4, 8, hidden_features=8), scale_bound=2.0)
    layer = randomize_parameters(layer, seed=9, scale=50.0).double()
    x = 10 * torch.randn(6, 4, dtype=torch.float64)
    z, log_det = layer(x)
    assert torch.isfinite(z).all() and torch.isfinite(log_det).all()
    assert (log_det.abs() <= 2.0 * 2).all(), "|s| < scale_bound on each of the 2 transformed features"
    x_again, _ = layer.inverse(z)
    torch.testing.assert_close(x_again, x)


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("layer", "shape", "message"),
    [
        (
            AffineCoupling(half_mask(4), MLP(4, 8)),
            (5, 3),
            "AffineCoupling(mask of shape (4,)) expects input of shape [batch, 4], got shape (5, 3)",
        ),
        (AdditiveCoupling(half_mask(4), MLP(4, 4)), (5, 4, 1, 1), "expects input of shape [batch, 4]"),
        (
            AffineCoupling(checkerboard_mask(4, 4), ResNet(2, 4)),
            (3, 2, 4, 6),
            "that the mask of shape (4, 4) broadcasts against, got shape (3, 2, 4, 6)",
        ),
        (AffineCoupling(channel_mask(4), ResNet(4, 8)), (3, 2, 4, 4), "broadcasts against, got shape (3, 2, 4, 4)"),
        (AffineCoupling(channel_mask(4), ResNet(4, 8)), (3, 4, 4), "expects input of shape [batch, channels, height,"),
    ],
)
def test_bad_input_shape_raises_helpful_error(layer: Coupling, shape: tuple[int, ...], message: str) -> None:
    check_rejects_shape(layer, shape, message)


def test_conditioner_with_the_wrong_output_shape_is_named() -> None:
    layer = AffineCoupling(half_mask(4), MLP(4, 4))  # an affine coupling needs 2 numbers per feature
    with pytest.raises(ValueError, match=r"conditioner should return shape \(5, 8\) .* got \(5, 4\)"):
        layer(torch.randn(5, 4))


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.tensor([0.0, 0.5, 1.0]), "zeros and ones"),
        (torch.ones(1, 2, 2, 2), "got shape \\(1, 2, 2, 2\\)"),
    ],
)
def test_bad_mask_is_refused(mask: Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AdditiveCoupling(mask, MLP(3, 3))


def test_scale_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive, finite scale_bound"):
        AffineCoupling(half_mask(4), MLP(4, 8), scale_bound=0.0)


def test_mask_is_a_buffer_that_follows_the_dtype() -> None:
    layer = AffineCoupling(half_mask(4), MLP(4, 8)).double()
    assert layer.mask.dtype == torch.float64
    assert "mask" in layer.state_dict()
    assert not any(parameter is layer.mask for parameter in layer.parameters())


# ---------------------------------------------------------------------------- the split form


def test_half_split_counts_the_kept_and_the_transformed_features() -> None:
    assert [half_split(4, parity) for parity in (0, 1)] == [(2, 2), (2, 2)]
    assert [half_split(5, parity) for parity in (0, 1)] == [(2, 3), (3, 2)]  # the kept half is half_mask's
    with pytest.raises(ValueError, match="at least 2 features"):
        half_split(1, 0)
    with pytest.raises(ValueError, match="parity 0 or 1"):
        half_split(4, 2)


def test_split_affine_coupling_follows_its_equation() -> None:
    """``z = (x_A, x_B exp(s) + t)`` in place, ``[raw_s, t] = conditioner(x_A)``, ``s = b tanh(raw_s / b)``."""
    layer = randomize_parameters(SplitAffineCoupling(5, 1, MLP(3, 4, hidden_features=8), scale_bound=1.5), seed=11)
    layer = layer.double()
    x = torch.randn(7, 5, dtype=torch.float64)
    x_transformed, x_kept = x[:, :2], x[:, 2:]  # parity 1 keeps the last 3 of 5 features
    raw_log_scale, shift = layer.conditioner(x_kept).chunk(2, dim=1)
    log_scale = 1.5 * torch.tanh(raw_log_scale / 1.5)
    z, log_det = layer(x)
    torch.testing.assert_close(z, torch.cat((x_transformed * torch.exp(log_scale) + shift, x_kept), dim=1))
    torch.testing.assert_close(log_det, log_scale.sum(dim=1))


def test_split_additive_coupling_shifts_and_preserves_volume() -> None:
    layer = randomize_parameters(SplitAdditiveCoupling(4, 0, MLP(2, 2, hidden_features=8)), seed=12).double()
    x = torch.randn(7, 4, dtype=torch.float64)
    z, log_det = layer(x)
    torch.testing.assert_close(z, torch.cat((x[:, :2], x[:, 2:] + layer.conditioner(x[:, :2])), dim=1))
    assert torch.equal(log_det, torch.zeros(7, dtype=torch.float64))


def mask_form_of(layer: SplitCoupling, scale_bound: float | None = None) -> Coupling:
    """The mask-form coupling that computes what ``layer`` does: same weights where they matter, noise elsewhere.

    The mask form's conditioner reads all ``D`` features (``mask * x``) and returns ``k`` numbers
    for each of them. Its first layer gets the split conditioner's weights in the columns of the
    kept features, and its last layer the split one's rows at the transformed features (for each
    of the ``k`` blocks). The other columns and rows are random: they meet masked-out inputs and
    discarded outputs, so they must not matter.
    """
    features, k = layer.features, layer.transformer.params_per_feature
    first, *middle, last = (module for module in layer.conditioner if isinstance(module, torch.nn.Linear))
    mask_conditioner = randomize_parameters(
        MLP(features, k * features, first.out_features, num_hidden_layers=len(middle) + 1), seed=13
    ).to(first.weight.dtype)
    mask_first, *mask_middle, mask_last = (m for m in mask_conditioner if isinstance(m, torch.nn.Linear))
    kept = layer.mask.nonzero().squeeze(1)
    transformed = (1 - layer.mask).nonzero().squeeze(1)
    rows = torch.cat([block * features + transformed for block in range(k)])
    with torch.no_grad():
        mask_first.weight[:, kept] = first.weight
        mask_first.bias.copy_(first.bias)
        for mask_linear, linear in zip(mask_middle, middle, strict=True):
            mask_linear.load_state_dict(linear.state_dict())
        mask_last.weight[rows] = last.weight
        mask_last.bias[rows] = last.bias
    if scale_bound is None:
        return AdditiveCoupling(layer.mask, mask_conditioner).to(first.weight.dtype)
    return AffineCoupling(layer.mask, mask_conditioner, scale_bound=scale_bound).to(first.weight.dtype)


@pytest.mark.parametrize(
    ("features", "parity", "affine"), [(4, 0, True), (5, 0, True), (5, 1, True), (6, 1, False), (3, 0, False)]
)
def test_split_coupling_equals_the_mask_form_with_half_masks(features: int, parity: int, affine: bool) -> None:
    kept, transformed = half_split(features, parity)
    if affine:
        layer = SplitAffineCoupling(features, parity, MLP(kept, 2 * transformed, hidden_features=8), scale_bound=2.0)
    else:
        layer = SplitAdditiveCoupling(features, parity, MLP(kept, transformed, hidden_features=8))
    layer = randomize_parameters(layer, seed=features + parity).double()
    reference = mask_form_of(layer, 2.0 if affine else None)
    expected_mask = half_mask(features) if parity == 0 else 1 - half_mask(features)
    assert torch.equal(reference.mask, expected_mask.to(torch.float64))
    x = torch.randn(9, features, dtype=torch.float64)
    for method in ("forward", "inverse"):
        output, log_det = getattr(layer, method)(x)
        expected_output, expected_log_det = getattr(reference, method)(x)
        torch.testing.assert_close(output, expected_output, atol=1e-12, rtol=1e-12, msg=method)
        torch.testing.assert_close(log_det, expected_log_det, atol=1e-12, rtol=1e-12, msg=f"{method} log_det")


def test_split_affine_log_scale_stays_bounded_for_huge_conditioner_outputs() -> None:
    layer = randomize_parameters(SplitAffineCoupling(4, 1, MLP(2, 4, hidden_features=8), scale_bound=2.0), 14, 50.0)
    x = 10 * torch.randn(6, 4, dtype=torch.float64)
    z, log_det = layer.double()(x)
    assert torch.isfinite(z).all() and torch.isfinite(log_det).all()
    assert (log_det.abs() <= 2.0 * 2).all(), "|s| < scale_bound on each of the 2 transformed features"
    torch.testing.assert_close(layer.inverse(z)[0], x)


def test_the_scale_clip_keeps_small_log_scales_exact_for_large_bounds() -> None:
    """``b tanh(raw / b) = raw (1 - (raw / b)^2 / 3 + ...)``: for ``b = 1e6``, ``raw`` to float64's last digits.

    (The same function written as ``b (2 sigmoid(2 raw / b) - 1)`` keeps only about ``1e-16 b`` of
    absolute precision: nothing of ``raw = 1e-8``.)
    """
    raw = torch.tensor([[1e-8, -3e-4, 0.5, -2.0]], dtype=torch.float64)
    log_scale, shift = Affine(scale_bound=1e6).log_scale_and_shift(torch.stack((raw, -raw), dim=-1))
    torch.testing.assert_close(log_scale, raw * (1 - (raw / 1e6) ** 2 / 3), atol=0, rtol=4e-16)
    assert torch.equal(shift, -raw)


@pytest.mark.parametrize(
    ("layer", "shape", "message"),
    [
        (
            SplitAffineCoupling(4, 0, MLP(2, 4)),
            (5, 3),
            "SplitAffineCoupling(features=4, parity=0) expects input of shape [batch, 4] or [batch, 4, height, "
            "width], got shape (5, 3)",
        ),
        (SplitAdditiveCoupling(4, 1, MLP(2, 2)), (5, 3, 1, 1), "[batch, 4, height, width], got shape (5, 3, 1, 1)"),
        (SplitAffineCoupling(5, 1, MLP(3, 4)), (5,), "expects input of shape [batch, 5] or [batch, 5, height,"),
        (SplitAffineCoupling(4, 1, MLP(2, 4)), (5, 4, 2), "got shape (5, 4, 2)"),
    ],
)
def test_split_coupling_rejects_bad_input_shapes(layer: SplitCoupling, shape: tuple[int, ...], message: str) -> None:
    check_rejects_shape(layer, shape, message)


def test_split_conditioner_with_the_wrong_output_shape_is_named() -> None:
    layer = SplitAffineCoupling(5, 0, MLP(2, 3))  # keeps 2, transforms 3: needs 2 * 3 outputs
    message = r"conditioner should return shape \(4, 6\) for the Affine transformer \(2 number\(s\) per transformed feature"
    with pytest.raises(ValueError, match=message):
        layer(torch.randn(4, 5))
    with pytest.raises(ValueError, match=message):
        layer.inverse(torch.randn(4, 5))


@pytest.mark.parametrize("scale_bound", [0.0, -1.0, float("inf"), float("nan")])
def test_split_scale_bound_must_be_positive_and_finite(scale_bound: float) -> None:
    with pytest.raises(ValueError, match="SplitAffineCoupling needs a positive, finite scale_bound"):
        SplitAffineCoupling(4, 0, MLP(2, 4), scale_bound=scale_bound)


def test_split_coupling_refuses_bad_sizes_and_parities() -> None:
    with pytest.raises(ValueError, match="at least 2 features"):
        SplitAffineCoupling(1, 0, MLP(1, 2))
    with pytest.raises(ValueError, match="parity 0 or 1, got -1"):
        SplitAdditiveCoupling(4, -1, MLP(2, 2))

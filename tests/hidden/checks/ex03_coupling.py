"""Hidden checks of ex03_coupling (instructor-only).

A coupling layer promises a structure, and the checks test that structure rather than any way of
writing it: the features with ``mask == 1`` come out as they went in, the Jacobian ``dz/dx`` is
block triangular (rows of the identity for those features, a diagonal block for the others) and
its log-determinant, from central differences in float64, is what ``forward`` reports. Before
anything is compared every trainable parameter is moved to a random value: a new coupling layer
whose network's last layer starts at zero is the identity, and must not pass by being one.
The checks never assume how a student splits the features, sizes the network or names its parts.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from course_grading.engine.expectations import (
    DTYPES,
    TOLERANCE,
    defined_in,
    expect_close,
    expect_correct_parameter_gradients,
    expect_flow_outputs_untouched_shapes_and_dtypes,
    expect_samples_independent,
    expect_tensor,
    forward,
    inverse,
    module_classes,
    randomise_parameters,
    refuse_modules,
    single_threaded_checks,
)
from course_pkg import nets, preprocessing
from course_pkg import testing as reference
from course_pkg.flows import Inverse, coupling, split_coupling, transformers
from course_grading.engine.grader import Registry

# Everything of course_pkg's coupling code that a submission could hand the work to.
REFERENCE_CODE = defined_in(coupling, split_coupling, transformers, nets)
REFERENCE_MODULES = module_classes(REFERENCE_CODE)

REGISTRY = Registry()
REGISTRY.forbidden = {
    "checkerboard_mask": REFERENCE_CODE,
    "AdditiveCoupling": REFERENCE_CODE,
    "AffineCoupling": REFERENCE_CODE,
    "dequantized_bits_per_dim": defined_in(preprocessing),
}
check = single_threaded_checks(REGISTRY)

SCALE_BOUND = 10.0  # the task asks for |s| <= 10 whatever the parameters
HUGE = 1000.0  # the factor on every parameter in the check of that promise


# ---------------------------------------------------------------------------------------- masks


def mask_of(*values: int) -> Tensor:
    return torch.tensor(values, dtype=torch.float32)


def random_mask(features: int, seed: int) -> Tensor:
    """A mask drawn at random (fixed by ``seed``) with at least one 0 and one 1."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        mask = (torch.rand(features, generator=generator) < 0.5).float()
        if 0 < mask.sum() < features:
            return mask


HALF_4 = mask_of(1, 1, 0, 0)
HALF_5 = mask_of(1, 1, 0, 0, 0)
ALTERNATING_6 = mask_of(1, 0, 1, 0, 1, 0)
ALTERNATING_5_ODD = mask_of(0, 1, 0, 1, 0)
ONE_KEPT = mask_of(0, 0, 1, 0, 0)
ONE_TRANSFORMED = mask_of(1, 1, 1, 0)
TWO_FEATURES = mask_of(0, 1)
RANDOM_7 = random_mask(7, seed=3)
RANDOM_8 = random_mask(8, seed=11)


def describe(mask: Tensor) -> str:
    return f"mask {mask.int().tolist()}"


# ------------------------------------------------------------------------------------- helpers


def refuse_reference_modules(layer: nn.Module) -> None:
    refuse_modules(layer, REFERENCE_MODULES)


def coupling_layer(Coupling, mask: Tensor, hidden_features: int = 8, dtype: torch.dtype = torch.float64,
                   scale: float = 0.5) -> nn.Module:
    """``Coupling(mask, hidden_features)`` in ``dtype``, with every trainable parameter randomised."""
    layer = Coupling(mask.clone(), hidden_features)
    refuse_reference_modules(layer)
    layer = layer.to(dtype)
    randomise_parameters(layer, torch.randn(5, mask.numel(), dtype=dtype), scale)
    return layer


def expect_finite(what: str, value) -> None:
    assert isinstance(value, Tensor), f"{what}: expected a torch.Tensor, got {type(value).__name__}"
    bad = int((~torch.isfinite(value)).sum())
    assert bad == 0, (
        f"{what}: expected finite values, got {bad} NaN or inf entries: exp(s) overflows unless s is bounded "
        f"(|s| <= {SCALE_BOUND:g} whatever the parameters)")


def expect_log_det_matches_numerical_jacobian(Coupling, masks: list[Tensor]) -> None:
    for mask in masks:
        layer = coupling_layer(Coupling, mask)
        x = torch.randn(4, mask.numel(), dtype=torch.float64)
        reference.check_log_det(layer, x, what=f"log_det ({describe(mask)})", copy_inputs=True)


def expect_inverse_and_its_log_det(Coupling, masks: list[Tensor]) -> None:
    for mask in masks:
        layer = coupling_layer(Coupling, mask)
        x = torch.randn(6, mask.numel(), dtype=torch.float64)
        reference.check_inverse(layer, x, 1e-8, 1e-8, copy_inputs=True)
        z = 2 * torch.randn(6, mask.numel(), dtype=torch.float64)
        x_from_z, _ = inverse(layer, z)
        expect_close(f"forward(inverse(z)) against z ({describe(mask)})", forward(layer, x_from_z)[0], z, 1e-8)
        reference.check_log_det(Inverse(layer), z, what=f"inverse log_det ({describe(mask)})", copy_inputs=True)


def expect_coupling_structure(Coupling, masks: list[Tensor], volume_preserving: bool) -> None:
    """The features with mask 1 pass unchanged both ways; ``dz/dx`` is block triangular with a
    diagonal block for the transformed features (ones if ``volume_preserving``, else ``exp(s)``
    depending on the sample) and a non-zero coupling block."""
    for mask in masks:
        layer = coupling_layer(Coupling, mask)
        batch, features = 5, mask.numel()
        kept, other = mask == 1, mask == 0
        where = describe(mask)
        x = torch.randn(batch, features, dtype=torch.float64)
        z, _ = forward(layer, x)
        expect_close(f"z where mask == 1 against x there ({where}: those features pass unchanged)",
                     z[:, kept], x[:, kept], 1e-12)
        x_from_z, _ = inverse(layer, x)
        expect_close(f"inverse output where mask == 1 against its input there ({where}: those features pass "
                     "unchanged both ways)", x_from_z[:, kept], x[:, kept], 1e-12)

        jacobian = reference.numerical_batch_jacobian(lambda v: forward(layer, v)[0], x)  # [B, D, D]
        identity = torch.eye(features, dtype=torch.float64).expand(batch, -1, -1)
        expect_close(f"rows of the numerical Jacobian dz/dx for the features where mask == 1 ({where}) against "
                     "rows of the identity", jacobian[:, kept], identity[:, kept], 1e-6)
        block = jacobian[:, other][:, :, other]  # dz_other / dx_other
        diagonal = torch.diagonal(block, dim1=1, dim2=2)
        expect_close(f"off-diagonal entries of dz/dx among the features where mask == 0 ({where}) against 0 (each "
                     "transformed feature may depend on itself and on the unchanged features, not on the other "
                     "transformed ones)", block - torch.diag_embed(diagonal), torch.zeros_like(block), 1e-6)
        if volume_preserving:
            expect_close(f"diagonal of dz/dx for the features where mask == 0 ({where}) against 1 "
                         "(z_i = x_i + t_i)", diagonal, torch.ones_like(diagonal), 1e-6)
        else:
            assert (diagonal > 0).all(), (
                f"diagonal of dz/dx for the features where mask == 0 ({where}): expected the scales exp(s) > 0, "
                f"got {diagonal.min().item():.4g}")
            assert (diagonal - 1).abs().max().item() > 1e-3, (
                f"diagonal of dz/dx for the features where mask == 0 ({where}): expected scales exp(s) other than 1 "
                "with random parameters, got 1 everywhere: s must come from the network")
            assert (diagonal - diagonal[0]).abs().max().item() > 1e-3, (
                f"diagonal of dz/dx for the features where mask == 0 ({where}): expected scales that differ between "
                "samples, got the same for every sample: s must be computed from each sample's unchanged features")
        coupling_block = jacobian[:, other][:, :, kept]  # dz_other / dx_kept
        assert coupling_block.abs().max().item() > 1e-3, (
            f"dz/dx of the features where mask == 0 with respect to those where mask == 1 ({where}): expected "
            "non-zero entries with random parameters, got zeros: the update must be computed by the network "
            "from the unchanged features")


def expect_shapes_dtypes_and_independence(Coupling, masks: list[Tensor]) -> None:
    name = Coupling.__name__ if isinstance(Coupling, type) else "the class"
    by_keyword = Coupling(mask=HALF_4.clone(), hidden_features=4)
    refuse_reference_modules(by_keyword)

    def parameter_count(hidden_features: int) -> int:
        return sum(p.numel() for p in Coupling(HALF_4.clone(), hidden_features).parameters() if p.requires_grad)

    narrow, wide = parameter_count(2), parameter_count(16)
    assert wide > narrow, (
        f"{name}(mask, hidden_features): expected more trainable parameters with hidden_features=16 than with 2, "
        f"got {wide} and {narrow}: hidden_features sets the width of the network's hidden layers")
    for dtype in DTYPES:
        for mask in masks:
            for batch in (1, 7):
                layer = coupling_layer(Coupling, mask, dtype=dtype)
                x = torch.randn(batch, mask.numel(), dtype=dtype)
                expect_flow_outputs_untouched_shapes_and_dtypes(layer, x)
                if batch > 1:
                    expect_samples_independent(layer, x, TOLERANCE[dtype])


def expect_gradients(Coupling, masks: list[Tensor]) -> None:
    for mask in masks:
        layer = coupling_layer(Coupling, mask, hidden_features=5)
        expect_correct_parameter_gradients(layer, torch.randn(3, mask.numel(), dtype=torch.float64))


# ---------------------------------------------------------------------------- checkerboard_mask


def expected_board(height: int, width: int, parity: int) -> Tensor:
    """The definition, entry by entry."""
    return torch.tensor([[float((i + j) % 2 == parity) for j in range(width)] for i in range(height)])


def expect_board(board, height: int, width: int, parity: int, call: str) -> None:
    assert isinstance(board, Tensor), f"{call}: expected a torch.Tensor, got {type(board).__name__}"
    assert tuple(board.shape) == (height, width), (
        f"{call}: expected shape ({height}, {width}), got {tuple(board.shape)}")
    expected = expected_board(height, width, parity)
    wrong = (board.detach().to(torch.float64) != expected.to(torch.float64)).nonzero()
    if len(wrong):
        i, j = wrong[0].tolist()
        raise AssertionError(
            f"{call}: expected mask[{i}, {j}] = {expected[i, j].item():g} since ({i} + {j}) % 2 "
            f"{'==' if (i + j) % 2 == parity else '!='} {parity}, got {board[i, j].item():g} "
            f"({len(wrong)} of {height * width} entries wrong)")


@check("checkerboard_mask")
def checkerboard_values_and_parity(checkerboard_mask) -> None:
    """mask[i, j] = 1 exactly where (i + j) % 2 == parity, on square boards, parity 0 (the default) and 1"""
    for size in (2, 4, 8, 28):
        expect_board(checkerboard_mask(size, size), size, size, 0, f"checkerboard_mask({size}, {size})")
        expect_board(checkerboard_mask(size, size, 0), size, size, 0, f"checkerboard_mask({size}, {size}, 0)")
        expect_board(checkerboard_mask(size, size, parity=1), size, size, 1,
                     f"checkerboard_mask({size}, {size}, parity=1)")


@check("checkerboard_mask")
def checkerboard_odd_and_non_square_sizes(checkerboard_mask) -> None:
    """the same pattern on odd and non-square boards ([height, width], rows first), both parities"""
    for height, width in [(1, 1), (3, 3), (5, 7), (7, 5), (2, 9), (1, 6), (6, 1), (4, 6)]:
        for parity in (0, 1):
            expect_board(checkerboard_mask(height, width, parity), height, width, parity,
                         f"checkerboard_mask({height}, {width}, {parity})")


@check("checkerboard_mask")
def checkerboard_is_a_float_tensor(checkerboard_mask) -> None:
    """a tensor of torch's default float dtype (float32) holding 0.0 and 1.0, not tracking gradients"""
    dtype = torch.get_default_dtype()
    for size in (1, 4, 5, 28):
        for parity in (0, 1):
            call = f"checkerboard_mask({size}, {size}, {parity})"
            board = checkerboard_mask(size, size, parity)
            assert isinstance(board, Tensor), f"{call}: expected a torch.Tensor, got {type(board).__name__}"
            assert board.dtype == dtype, (
                f"{call}: expected dtype {dtype} (a mask multiplies float tensors), got {board.dtype}")
            assert not board.requires_grad, f"{call}: expected a constant tensor, got one that requires grad"
            values = sorted(set(board.flatten().tolist()))
            assert set(values) <= {0.0, 1.0}, f"{call}: expected the values 0.0 and 1.0 only, got {values[:5]}"


# ----------------------------------------------------------------------------- AdditiveCoupling


@check("AdditiveCoupling")
def additive_log_det_matches_numerical_jacobian(AdditiveCoupling) -> None:
    """log_det (zero: volume preserving) equals log|det| of the numerical Jacobian, random parameters, several masks"""
    expect_log_det_matches_numerical_jacobian(AdditiveCoupling, [HALF_4, ALTERNATING_5_ODD, RANDOM_7, TWO_FEATURES])


@check("AdditiveCoupling")
def additive_inverse_and_its_log_det(AdditiveCoupling) -> None:
    """inverse undoes forward both ways, and its log_det matches the inverse's numerical Jacobian"""
    expect_inverse_and_its_log_det(AdditiveCoupling, [HALF_5, ALTERNATING_6, RANDOM_8])


@check("AdditiveCoupling")
def additive_masked_features_pass_and_jacobian_is_triangular(AdditiveCoupling) -> None:
    """features where mask == 1 pass unchanged; dz/dx is block triangular with a unit diagonal"""
    expect_coupling_structure(AdditiveCoupling, [HALF_4, ALTERNATING_5_ODD, RANDOM_7, ONE_KEPT], volume_preserving=True)


@check("AdditiveCoupling")
def additive_shapes_dtypes_and_independence(AdditiveCoupling) -> None:
    """shapes and float32/float64 kept, inputs not changed in place, samples independent, hidden_features used"""
    expect_shapes_dtypes_and_independence(AdditiveCoupling, [HALF_4, RANDOM_7])


@check("AdditiveCoupling")
def additive_gradients_reach_every_parameter(AdditiveCoupling) -> None:
    """gradients of z reach every parameter and match finite differences"""
    expect_gradients(AdditiveCoupling, [HALF_4, ALTERNATING_5_ODD])


# ------------------------------------------------------------------------------- AffineCoupling


@check("AffineCoupling")
def affine_log_det_matches_numerical_jacobian(AffineCoupling) -> None:
    """log_det (the sum of s) equals log|det| of the numerical Jacobian, random parameters, several masks"""
    expect_log_det_matches_numerical_jacobian(AffineCoupling, [HALF_4, ALTERNATING_5_ODD, RANDOM_7, TWO_FEATURES])


@check("AffineCoupling")
def affine_inverse_and_its_log_det(AffineCoupling) -> None:
    """inverse undoes forward both ways, and its log_det matches the inverse's numerical Jacobian"""
    expect_inverse_and_its_log_det(AffineCoupling, [HALF_5, ALTERNATING_6, RANDOM_8])


@check("AffineCoupling")
def affine_masked_features_pass_and_jacobian_is_triangular(AffineCoupling) -> None:
    """features where mask == 1 pass unchanged; dz/dx is block triangular, its diagonal exp(s) set per sample"""
    expect_coupling_structure(AffineCoupling, [HALF_4, ALTERNATING_5_ODD, RANDOM_7, ONE_KEPT], volume_preserving=False)


@check("AffineCoupling")
def affine_shapes_dtypes_and_independence(AffineCoupling) -> None:
    """shapes and float32/float64 kept, inputs not changed in place, samples independent, hidden_features used"""
    expect_shapes_dtypes_and_independence(AffineCoupling, [HALF_4, RANDOM_7])


@check("AffineCoupling")
def affine_gradients_reach_every_parameter(AffineCoupling) -> None:
    """gradients of z and log_det reach every parameter and match finite differences"""
    expect_gradients(AffineCoupling, [HALF_4, ALTERNATING_5_ODD])


@check("AffineCoupling")
def affine_scale_is_bounded(AffineCoupling) -> None:
    """s is bounded: with every parameter multiplied by 1000, outputs stay finite and |s| <= 10"""
    for mask in [ONE_TRANSFORMED, ALTERNATING_5_ODD, RANDOM_7]:
        transformed = int((mask == 0).sum())
        bound = SCALE_BOUND * transformed
        for dtype in DTYPES:
            layer = coupling_layer(AffineCoupling, mask, dtype=dtype)
            with torch.no_grad():
                for parameter in layer.parameters():
                    if parameter.requires_grad:
                        parameter.mul_(HUGE)
            where = f"every parameter multiplied by {HUGE:g}, {describe(mask)}, {dtype}"
            for method, run in [("forward", forward), ("inverse", inverse)]:
                output, log_det = run(layer, 2 * torch.randn(16, mask.numel(), dtype=dtype))
                expect_finite(f"{method} output ({where})", output)
                expect_finite(f"{method} log_det ({where})", log_det)
                largest = log_det.abs().max().item()
                assert largest <= bound * (1 + 1e-5), (
                    f"{method} log_det ({where}): expected |log_det| <= {bound:g} ({transformed} transformed "
                    f"feature(s), |s| <= {SCALE_BOUND:g} each), got {largest:.4g}: bound s by a fixed constant")


# ------------------------------------------------------------- dequantized_bits_per_dim (diagnosis)

LogProb = Callable[[Tensor], Tensor]


def uniform_log_prob(x: Tensor) -> Tensor:
    """The uniform density on [0, 1)^D: log p(x) = 0 for every sample, [B]."""
    return x.new_zeros(x.shape[0])


def gaussian_log_prob(mean: float, std: float) -> LogProb:
    """x [B, ...] -> log N(x; mean, std^2 I), summed over every dimension but the batch: [B] (nats)."""
    return lambda x: (-((x - mean) / std) ** 2 / 2 - math.log(std) - math.log(2 * math.pi) / 2).flatten(1).sum(dim=1)


def pixels_and_noise(shape: tuple[int, ...], pixel_dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Random 8-bit pixel values k (whole numbers in {0, ..., 255}) and noise u ~ U[0, 1), float64, both ``shape``."""
    return torch.randint(0, 256, shape).to(pixel_dtype), torch.rand(shape, dtype=torch.float64)


def expected_bits(log_prob: LogProb, images: Tensor, noise: Tensor) -> Tensor:
    """(-log p(x) + D log 256) / (D log 2) at the dequantized x = (k + u) / 256, D = C H W: [B]."""
    x = (images.to(torch.float64) + noise) / 256
    nats_per_dimension = -log_prob(x) / images[0].numel()
    return (nats_per_dimension + math.log(256)) / math.log(2)


def expect_bits(dequantized_bits_per_dim, log_prob: LogProb, images: Tensor, noise: Tensor, expected: Tensor,
                what: str) -> None:
    bits = dequantized_bits_per_dim(log_prob, images.clone(), noise.clone())
    expect_tensor(f"bits per dimension of {what}", bits, (images.shape[0],), torch.float64)
    expect_close(f"bits per dimension of {what}", bits, expected, 1e-9)


def expect_gaussian_bits(dequantized_bits_per_dim, shapes: list[tuple[int, ...]], pixel_dtype: torch.dtype) -> None:
    for shape in shapes:
        images, noise = pixels_and_noise(shape, pixel_dtype)
        for mean, std in [(0.5, 0.25), (0.3, 1.5)]:
            log_prob = gaussian_log_prob(mean, std)
            expect_bits(dequantized_bits_per_dim, log_prob, images, noise, expected_bits(log_prob, images, noise),
                        f"{pixel_dtype} images of shape {shape} under N({mean:g}, {std:g}^2) per dimension")


@check("dequantized_bits_per_dim")
def uniform_density_gives_eight_bits(dequantized_bits_per_dim) -> None:
    """a uniform density on [0, 1)^D (log p = 0) gives exactly 8 bits per dimension, one value per image: [B]"""
    for shape in [(4, 1, 28, 28), (3, 3, 4, 4), (1, 1, 1, 1)]:
        images, noise = pixels_and_noise(shape)
        expect_bits(dequantized_bits_per_dim, uniform_log_prob, images, noise,
                    torch.full((shape[0],), 8.0, dtype=torch.float64), f"images of shape {shape} under the uniform density")


@check("dequantized_bits_per_dim")
def bits_match_the_gaussian_closed_form(dequantized_bits_per_dim) -> None:
    """matches the closed form under Gaussian densities, at the dequantized x = (k + u) / 256, for MNIST-shaped images"""
    expect_gaussian_bits(dequantized_bits_per_dim, [(5, 1, 28, 28)], torch.float64)


@check("dequantized_bits_per_dim")
def bits_for_any_image_shape(dequantized_bits_per_dim) -> None:
    """works for images of any C x H x W, uint8 pixels included"""
    expect_gaussian_bits(dequantized_bits_per_dim, [(2, 3, 5, 7), (3, 2, 8, 3), (2, 1, 1, 1)], torch.uint8)
